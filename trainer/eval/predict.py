"""Ask a trained model about measurements: fix some fields, sample the rest under the token grammar.

    python -m trainer.predict --workdir W --src IP --dst IP [--time T] [--quantiles 0.1,0.5,0.9] [--samples N]
    python -m trainer.predict --workdir W --given src_addr=IP --given rtt=25.0      # the inverse query

The given fields become a prompt ``[MeasurementStart, given blocks in canonical order]`` (positions from
0, as the first measurement of a record).

* **When the RTT is asked** (not given), the answer is its distribution, found exactly and without
  sampling (:mod:`trainer.eval.quantiles`): the prompt ends with the RTT's role token, and a descent over
  the RTT's value tokens gives each ``--quantiles`` level of the RTT given success (ms, monotone in the
  level, finite, within what the scheme encodes) and the failure probability. Deterministic: the same
  checkpoint and prompt give the same figures, whatever ``--seed``.
* ``--samples N`` (the default when the RTT is given, 256) also completes the measurement ``N`` times with
  the grammar enforced at every step (``tokenizer.grammar``: roles only where a block may start, the
  right number of byte tokens, the address family of the given addresses, a representable timestamp), so
  every sample decodes; samples are drawn in one batch over a KV cache. When the RTT is asked it is drawn
  first, from the same prompt the descent reads, so the samples and the quantiles describe one
  distribution; the samples' p10, p50, p90 and failure share are printed beside the quantiles.
* When other fields are sampled, prints each one's most frequent values and the first ``--show``
  decoded measurements. ``--json`` prints all of it as one JSON object instead.

Fields: ``src_addr`` (``src``), ``dst_addr`` (``dst``), ``rtt`` (ms; -1 for a failure), ``size``,
``packet_error_count`` (``errors``), ``timestamp`` (``time``, ``event_time``: epoch seconds or ISO 8601,
UTC when no zone is given), ``msm_id``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import sys

import numpy as np

from beam_pipelines.common.cli import StrictArgumentParser, parse_options
from beam_pipelines.common.errors import InputError, UsageError, report
from beam_pipelines.common.tricks import keep_freed_memory_for_xla
from tokenizer import decode_measurement, epoch_seconds, fields, grammar
from tokenizer.addresses import parse_address
from tokenizer.vocab import (
    BLOCK_DST,
    BLOCK_ERRORS,
    BLOCK_MSM_ID,
    BLOCK_NAMES,
    BLOCK_RTT,
    BLOCK_SIZE,
    BLOCK_SRC,
    BLOCK_TIMESTAMP,
    MEASUREMENT_START,
)
from trainer.eval import quantiles, sampling

FIELD_ALIASES = {
    "src_addr": BLOCK_SRC, "src": BLOCK_SRC,
    "dst_addr": BLOCK_DST, "dst": BLOCK_DST,
    "rtt": BLOCK_RTT,
    "size": BLOCK_SIZE,
    "packet_error_count": BLOCK_ERRORS, "errors": BLOCK_ERRORS,
    "timestamp": BLOCK_TIMESTAMP, "time": BLOCK_TIMESTAMP, "event_time": BLOCK_TIMESTAMP,
    "msm_id": BLOCK_MSM_ID,
}  # fmt: skip
DECODED_KEY = {  # canonical block -> key of tokenizer.decode_measurement's dict
    BLOCK_SRC: "src_addr", BLOCK_DST: "dst_addr", BLOCK_RTT: "rtt", BLOCK_SIZE: "size",
    BLOCK_ERRORS: "packet_error_count", BLOCK_TIMESTAMP: "event_time", BLOCK_MSM_ID: "msm_id",
}  # fmt: skip


def _integer(text: str, field: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"{field}={text!r}: expected an integer") from None
    if not lo <= value <= hi:
        raise UsageError(f"{field}={text!r}: out of range [{lo}, {hi}]")
    return value


def parse_time(text: str) -> int:
    """Epoch seconds from an integer or an ISO 8601 timestamp (UTC when it has no zone)."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = epoch_seconds(dt.datetime.fromisoformat(text))
        except ValueError:
            raise UsageError(f"timestamp={text!r}: expected epoch seconds or ISO 8601 (2025-07-01T12:00:00Z)") from None
    if not grammar.TIMESTAMP_MIN <= value <= grammar.TIMESTAMP_MAX:
        raise UsageError(f"timestamp={text!r}: outside the years 1-9999")
    return value


def encode_field(block: int, text: str) -> tuple[list[int], int | None]:
    """The token block of one given field (role token included) and its address family (None if not an address).

    The block is :mod:`tokenizer.fields`' encoding of the parsed value. Raises :class:`UsageError` on a
    value that cannot be encoded.
    """
    name, codec = BLOCK_NAMES[block], fields.CODECS[block]
    if block in (BLOCK_SRC, BLOCK_DST):
        parsed = parse_address(text)
        if isinstance(parsed, str):
            raise UsageError(f"{name}={text!r}: not an IP address ({parsed})")
        version, raw = parsed
        return codec.encode(raw), version
    if block == BLOCK_RTT:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"rtt={text!r}: expected milliseconds (a number; -1 for a failed ping)") from None
        if not math.isfinite(value):
            raise UsageError(f"rtt={text!r}: must be finite")
    elif block == BLOCK_TIMESTAMP:
        value = parse_time(text)
    else:
        value = _integer(text, name, *codec.bounds)
    return codec.encode(value), None


def parse_given(items: list[str]) -> dict[int, str]:
    """``["src=1.2.3.4", "rtt=20"]`` -> {canonical block: value text}; unknown or repeated fields raise."""
    given: dict[int, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"--given {item!r}: expected FIELD=VALUE")
        if key not in FIELD_ALIASES:
            raise UsageError(f"--given {item!r}: unknown field {key!r}; fields: {', '.join(BLOCK_NAMES)}")
        block = FIELD_ALIASES[key]
        if block in given:
            raise UsageError(f"field {BLOCK_NAMES[block]} given twice")
        given[block] = value.strip()
    return given


def build_prompt(given: dict[int, str]) -> list[int]:
    """``[MeasurementStart] + the given fields' blocks in canonical order``; checks the address families agree."""
    prompt, families = [MEASUREMENT_START], {}
    for block in sorted(given):
        tokens, family = encode_field(block, given[block])
        if family is not None:
            families[BLOCK_NAMES[block]] = family
        prompt += tokens
    if len(set(families.values())) > 1:
        raise UsageError(f"src and dst are of different address families: {families}")
    if len(given) == len(BLOCK_NAMES):
        raise UsageError("every field is given: nothing to sample")
    return prompt


def _jsonable(value):
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def rtt_distribution(rtts: np.ndarray) -> dict:
    """p10, p50, p90 of the successful (finite, >= 0) RTTs and the share of failed (< 0) ones."""
    rtts = np.asarray(rtts, np.float64)
    ok = rtts[np.isfinite(rtts) & (rtts >= 0)]
    out = {
        "samples": int(len(rtts)),
        "successful": int(len(ok)),
        "failure_probability": float(np.mean(np.isfinite(rtts) & (rtts < 0))) if len(rtts) else None,
        "invalid": int((~np.isfinite(rtts)).sum()),
    }
    for q in (10, 50, 90):
        out[f"p{q}"] = float(np.percentile(ok, q)) if len(ok) else None
    return out


def summarize(decoded: list[dict], given: dict[int, str], top: int = 5) -> dict:
    """The answer: the RTT distribution if the RTT was sampled, and the most frequent values of every
    other sampled field."""
    out: dict = {}
    if BLOCK_RTT not in given:
        out["rtt"] = rtt_distribution(np.array([d["rtt"] for d in decoded]))
    fields = {}
    for block in range(len(BLOCK_NAMES)):
        if block in given or block == BLOCK_RTT or DECODED_KEY[block] not in decoded[0]:
            continue
        key = DECODED_KEY[block]
        counts = collections.Counter(_jsonable(d[key]) for d in decoded)
        fields[BLOCK_NAMES[block]] = [[value, n / len(decoded)] for value, n in counts.most_common(top)]
    out["fields"] = fields
    return out


def _levels(text: str | None) -> tuple[float, ...]:
    """The ``--quantiles`` levels (default 0.1, 0.5, 0.9), each once, in the order given."""
    if text is None:
        return quantiles.DEFAULT_QUANTILES
    try:
        return tuple(dict.fromkeys(quantiles.parse_quantiles(text)))
    except ValueError as err:
        raise UsageError(f"--quantiles: {err}") from None


def _level_key(q: float) -> str:
    """A level as a JSON key: ``0.1`` -> ``"0.1"`` (the shortest text that reads back as the same float)."""
    return repr(float(q))


def _sampled_rtt(value: float) -> float | None:
    """A sampled RTT for ``rtt_samples``: -1.0 for a failure (any negative value), None for inf or NaN (an
    unconstrained sample may spell one; JSON has no such numbers)."""
    if math.isnan(value) or math.isinf(value) and value > 0:
        return None
    return -1.0 if value < 0 else value


def _parser() -> StrictArgumentParser:
    p = StrictArgumentParser(
        prog="python -m trainer.predict", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workdir", required=True, help="training workdir (its latest checkpoint is used)")
    p.add_argument("--src", help="source address (same as --given src_addr=IP)")
    p.add_argument("--dst", help="destination address (same as --given dst_addr=IP)")
    p.add_argument("--time", help="timestamp: epoch seconds or ISO 8601 (same as --given timestamp=T)")
    p.add_argument("--given", action="append", default=[], metavar="FIELD=VALUE", help="fix a field (repeatable)")
    p.add_argument("--quantiles", default=None, metavar="Q,Q,...",
                   help="RTT quantile levels found by descent, each in (0, 1) (default 0.1,0.5,0.9; only when "
                        "the RTT is asked)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples drawn (default: none when the RTT is asked, 256 when it is given)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: most likely tokens)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--show", type=int, default=10, help="decoded samples to print (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code: 0 done, 2 bad arguments or a workdir without a checkpoint
    (``beam_pipelines.common.errors``; a failure while sampling raises, exit 1)."""
    try:
        args = parse_options(_parser(), argv)
    except UsageError as err:  # an unknown or bad option: one error line, nothing read or written
        return report(err)
    keep_freed_memory_for_xla()  # before JAX starts its backend (the function says why)
    items = list(args.given)
    for flag, field in ((args.src, "src_addr"), (args.dst, "dst_addr"), (args.time, "timestamp")):
        if flag is not None:
            items.append(f"{field}={flag}")
    try:
        if args.samples is not None and args.samples <= 0:
            raise UsageError("--samples must be positive")
        if args.temperature < 0:
            raise UsageError("--temperature must be >= 0")
        given = parse_given(items)
        prompt = build_prompt(given)
        rtt_asked = BLOCK_RTT not in given
        if args.quantiles is not None and not rtt_asked:
            raise UsageError("--quantiles: the RTT is given, so there is no RTT distribution to describe")
        levels = _levels(args.quantiles) if rtt_asked else ()
        samples = args.samples if args.samples is not None else (0 if rtt_asked else 256)
        loaded = sampling.load(args.workdir, args.step)
        sampling.check_decodable(loaded.config.tokenizer, args.workdir)
    except (UsageError, InputError) as err:  # a CheckpointError is an InputError
        return report(err)
    sampler = sampling.Sampler.from_loaded(loaded)
    if hasattr(sampler.scheme, "rtt_prompt"):  # a scheme whose measurements depend on their run (v2)
        try:
            return _predict_run(args, sampler, loaded, given, levels, samples)
        except UsageError as err:
            return report(err)
    answer = {
        "checkpoint_step": loaded.step,
        "given": {BLOCK_NAMES[b]: v for b, v in sorted(given.items())},
        "samples": samples,
    }
    if rtt_asked:
        code = quantiles.rtt_code_for(loaded.config.tokenizer)
        if code.role is not None:
            prompt = [*prompt, code.role]  # the RTT next: the descent and the samples read the same prompt
        _add_descent(answer, sampler, prompt, code, levels)
    decoded = []
    if samples:
        generated = sampling.sample(sampler, [prompt], samples, seed=args.seed, temperature=args.temperature)[0]
        decoded = [decode_measurement(m) for m in sampling.complete_measurements(prompt, generated)]
        answer.update(summarize(decoded, given))
        if rtt_asked:
            answer["rtt_samples"] = [_sampled_rtt(d["rtt"]) for d in decoded]
    if _print_answer(answer, decoded, args):
        return 0
    if "rtt_quantiles" in answer:
        print("RTT (ms) by descent: " + "  ".join(f"q{k} {v:.6g}" for k, v in answer["rtt_quantiles"].items())
              + f"   failure probability {answer['failure_probability']:.3f}")
    if "rtt" in answer:
        r = answer["rtt"]
        if r["successful"]:
            print(f"RTT (ms): p10 {r['p10']:.2f}  p50 {r['p50']:.2f}  p90 {r['p90']:.2f}   "
                  f"failure probability {r['failure_probability']:.3f}  ({r['successful']} successful samples)")
        else:
            print(f"RTT: no successful sample; failure probability {r['failure_probability']:.3f}")
    for name, values in answer.get("fields", {}).items():
        print(f"{name}: " + ", ".join(f"{v} ({share:.0%})" for v, share in values))
    if args.show and answer["measurements"]:
        print(f"first {len(answer['measurements'])} samples:")
        for m in answer["measurements"]:
            print("  " + "  ".join(f"{k}={m[k]}" for k in (*BLOCK_NAMES[:2], "rtt", "size", "packet_error_count",
                                                             "event_time", "msm_id") if k in m))
    return 0


def _print_answer(answer: dict, decoded: list[dict], args, note: str = "") -> bool:
    """Put the first ``--show`` decoded samples into ``answer``; with ``--json`` print it as one JSON object
    and return True (nothing more to print), else print the text answer's first line (checkpoint step,
    samples, the given fields, then ``note``) and return False."""
    answer["measurements"] = [{k: _jsonable(v) for k, v in d.items()} for d in decoded[: args.show]]
    if args.json:
        print(json.dumps(answer, sort_keys=True))
        return True
    print(f"checkpoint step {answer['checkpoint_step']}; {answer['samples']} samples; given: "
          + (", ".join(f"{k}={v}" for k, v in answer["given"].items()) or "nothing") + note)
    return False


def _add_descent(answer: dict, sampler, prompt, code, levels) -> None:
    """Put the RTT's quantiles at ``levels`` (by descent over ``code``, ms given success) and P(failure) for
    the one ``prompt`` into ``answer``: what both the v1 any-field query and the run query report."""
    dist = quantiles.model_distribution(sampler, [np.asarray(prompt)], code, levels)
    answer["rtt_quantiles"] = {_level_key(q): float(v) for q, v in zip(levels, dist.values[0])}
    answer["failure_probability"] = float(dist.failure_probability[0])


def _predict_run(args, sampler, loaded, given: dict[int, str], levels, samples: int) -> int:
    """The RTT query on a checkpoint of a scheme that writes a measurement after its run's source and time
    (v2, ``Scheme.rtt_prompt``): the prompt is the source header, the time, then the given destination,
    size and error count; the RTT is asked. Without ``--time`` the time is the model's most likely one
    after the source (drawn at temperature 0, so deterministic), and the answer says so."""
    scheme = sampler.scheme
    if BLOCK_RTT in given:
        raise UsageError(f"a {scheme.name} checkpoint answers the RTT query only: do not give the rtt")
    for block in (BLOCK_MSM_ID,) if not scheme.keeps_msm_id else ():
        if block in given:
            raise UsageError(f"{BLOCK_NAMES[block]}: tokenizer {scheme.name} does not keep it")
    if BLOCK_SRC not in given:
        raise UsageError(f"a {scheme.name} checkpoint needs the source (--src): its measurements follow their source")
    values = {DECODED_KEY[b]: v for b, v in given.items()}
    row = {"src_addr": values["src_addr"], "dst_addr": values.get("dst_addr")}
    for key in ("size", "packet_error_count"):
        if key in values:
            row[key] = _integer(values[key], key, 0, 65535 if key == "size" else 255)
    answer = {"checkpoint_step": loaded.step, "given": {BLOCK_NAMES[b]: v for b, v in sorted(given.items())},
              "samples": samples}
    if BLOCK_TIMESTAMP in given:
        row["event_time"] = parse_time(given[BLOCK_TIMESTAMP])
    else:  # the model's most likely time after the source: the first field a v2 measurement writes
        head = scheme.rtt_prompt([], {"src_addr": row["src_addr"], "event_time": None})
        drawn = sampling.sample(sampler, [head], 1, temperature=0.0)[0]
        row["event_time"] = scheme.decode_sample(head, drawn[0])["event_time"]
        answer["timestamp_from_model"] = row["event_time"]
    try:
        prompt = scheme.rtt_prompt([], row)
    except ValueError as err:
        raise UsageError(str(err)) from None
    _add_descent(answer, sampler, prompt, scheme.rtt, levels)
    decoded = []
    if samples:
        generated = sampling.sample(sampler, [prompt], samples, seed=args.seed, temperature=args.temperature)[0]
        decoded = [scheme.decode_sample(prompt, g) for g in generated]
        answer.update(summarize(decoded, given))
        answer["rtt_samples"] = [_sampled_rtt(d["rtt"]) for d in decoded]
    note = f"; time {row['event_time']} (the model's most likely)" if "timestamp_from_model" in answer else ""
    if _print_answer(answer, decoded, args, note):
        return 0
    print("RTT (ms) by descent: " + "  ".join(f"q{k} {v:.6g}" for k, v in answer["rtt_quantiles"].items())
          + f"   failure probability {answer['failure_probability']:.3f}")
    for m in answer["measurements"]:
        print("  " + "  ".join(f"{k}={v}" for k, v in m.items()))
    return 0


if __name__ == "__main__":
    sys.exit(run())
