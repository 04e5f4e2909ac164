"""``pretokenize --append``: the dataset in ``--output`` that a run adds a version to, its shaping options
taken over (a given option that differs is refused, both values named), and what an interrupted run left
beside it removed (docs/pretokenize.md#appending-a-version).
"""

from __future__ import annotations

import dataclasses

from beam_pipelines.common import storage
from beam_pipelines.common.errors import UsageError
from beam_pipelines.dataset import manifest as manifest_lib
from beam_pipelines.dataset.manifest import SPLIT_NAMES
from beam_pipelines.pretokenize import planning, stages
from beam_pipelines.pretokenize.options import Options
from tokenizer import TokenizerMismatch, check_tokenizer, get_scheme, scheme_names


def dataset_to_append_to(out: str) -> dict:
    """The manifest of the complete dataset in ``out``; :class:`UsageError` when there is none."""
    if not storage.exists(storage.join(out, manifest_lib.MANIFEST_NAME)):
        raise UsageError(f"{out} holds no dataset to append to; run without --append to create it")
    return manifest_lib.read_manifest(out)


def inherit_options(options: Options, manifest: dict) -> Options:
    """``options`` with the dataset's shaping options; a given option that differs is refused, both values
    named (an append must shape its records exactly as the dataset's earlier versions)."""
    out = options.output
    try:
        scheme = check_tokenizer(manifest["tokenizer"])
    except TokenizerMismatch as exc:
        known = " or ".join(str(get_scheme(name).info()) for name in scheme_names())
        raise UsageError(
            f"{out} was written with tokenizer {manifest['tokenizer']}, this code writes {known} ({exc}); an "
            "append must use the dataset's tokenizer (rebuild it instead)"
        ) from exc
    if options.tokenizer_given and options.tokenizer != scheme.name:
        raise UsageError(
            f"--tokenizer {options.tokenizer} differs from the dataset's tokenizer {scheme.name} in {out}; an "
            f"append keeps the dataset's scheme (leave --tokenizer out, or rebuild the dataset without --append)"
        )
    options = dataclasses.replace(options, tokenizer=scheme.name)
    ds = {**planning.dataset_options(manifest), "seq_len": manifest["seq_len"]}
    values = {
        "seq_len": options.seq_len,
        "split": list(options.split),
        "split_by": options.split_by,
        "compression": options.compression,
        "bucket_rows": options.bucket_rows,
    }
    for key in sorted(options.given):
        if key in ds and values[key] != ds[key]:
            raise UsageError(
                f"--{key} {values[key]} differs from the dataset's {key} {ds[key]} in {out}; an append keeps "
                f"the dataset's shaping options (leave --{key} out, or rebuild the dataset without --append)"
            )
    taken = {k: ds[k] for k in values if k in ds}
    if "split" in taken:
        taken["split"] = tuple(taken["split"])
    return dataclasses.replace(options, **taken)


def remove_leftovers(out: str, manifest: dict) -> list[str]:
    """Remove what an interrupted run left in ``out`` beside the complete dataset: the scratch folder, a
    half-written manifest, and files in the dataset's folders that the manifest does not list (an append
    killed after it gave its new files their final names). Listed files are never touched. Returns the
    removed files' paths relative to ``out``."""
    listed = {f["path"] for v in manifest_lib.dataset_versions(manifest) for s in v.get("splits", {}).values() for f in s["files"]}
    listed |= {p for v in manifest_lib.dataset_versions(manifest) for p in (v.get("rejected") or {}).get("files", [])}
    listed |= {f["path"] for s in manifest["splits"].values() for f in s["files"]}
    removed = []
    for name in storage.listdir(out):
        path = storage.join(out, name)
        if name in (stages.TMP_DIR, manifest_lib.MANIFEST_NAME + ".tmp"):
            storage.rmtree(path)
            removed.append(name)
        elif name in (*SPLIT_NAMES, stages.REJECTED_DIR):
            base = path.rstrip("/") + "/"
            for file in storage.list_files(path):
                rel = f"{name}/{file[len(base):]}"
                if rel not in listed:
                    storage.remove(file)
                    removed.append(rel)
    return removed
