"""Word error rate of the ASR stage on the shared corpora that have reference text.

    nice -n 19 python benchmarks/asr_wer.py [--per-corpus 30] [--model whisper-base] [--beams 1]

References, and where they come from:

- EmoDB: the 10 sentences, from the corpus documentation as copied into the shared corpus'
  manifest (``text`` column, "a01: Der Lappen liegt auf dem Eisschrank.", code stripped;
  /work/shared/corpora/emodb/SOURCE.md: "Transcripts (text column) are the 10 EmoDB
  sentences keyed by the text code").
- RAVDESS: the two statements "Kids are talking by the door" / "Dogs are sitting by the
  door" (RAVDESS documentation; ravdess/SOURCE.md "Statement texts").
- BAVED: the spoken Arabic word(s) of each file (ids 0-6 from BAVED's README; baved/SOURCE.md).

Not scored: SAVEE (its TIMIT sentences are not in the source, the manifest holds sentence
codes only) and EMOVO (sentence codes b1-n5; the sentence texts are in the EMOVO paper, not in
the shared data), Urdu and ASED (no text).

The subset: ``--per-corpus`` clips per corpus, drawn with a fixed seed after spreading over
speakers and sentences (one clip per (speaker, sentence) pair first). Decoding: the
manifest's language given to Whisper (``language="manifest"``) and, on the same clips,
Whisper's own language detection. Transcripts are kept in the user cache's transcript store,
so a rerun (and benchmarks/is25.py) reuses them. Writes
benchmarks/results/asr_wer.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MANIFESTS = Path(os.environ.get("POLYEMO_MANIFESTS", "/work/manifests"))
CORPORA = ("emodb", "ravdess", "baved")


def references(corpus: str, manifest: pd.DataFrame) -> pd.Series:
    text = manifest["text"].astype(str)
    if corpus == "emodb":
        return text.map(lambda t: re.sub(r"^[a-z]\d\d:\s*", "", t))  # "a01: Der Lappen ..." -> sentence
    return text


def subset(manifest: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """n rows spread over (speaker, sentence) pairs: one per pair first, then the rest at random."""
    shuffled = manifest.sample(frac=1.0, random_state=seed)
    first = shuffled.drop_duplicates(["speaker", "text"])
    rest = shuffled.drop(first.index)
    return pd.concat([first, rest]).head(n).sort_values("utt_id")


def main() -> None:
    from polyemo.encoders.asr import Transcriber, transcribe_manifest, word_error_rate

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-corpus", type=int, default=30)
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--beams", type=int, default=1)
    parser.add_argument("--modes", default="manifest,detect", help="language modes to score")
    parser.add_argument("--detect-corpora", default=",".join(CORPORA),
                        help="corpora scored with detected language (decoding is slow on a loaded machine)")
    parser.add_argument("--note", default="", help="conditions of the run, added to the report")
    args = parser.parse_args()

    rows, examples = [], []
    for mode in args.modes.split(","):
        transcriber = Transcriber(args.model, language=mode, beams=args.beams)
        for corpus in CORPORA:
            if mode == "detect" and corpus not in args.detect_corpora.split(","):
                continue
            manifest = pd.read_parquet(MANIFESTS / f"{corpus}.parquet")
            part = subset(manifest, args.per_corpus).reset_index(drop=True)
            refs = references(corpus, part).tolist()
            start = time.perf_counter()
            result = transcribe_manifest(part, transcriber, rows="all", batch_size=8, progress=False)
            seconds = time.perf_counter() - start
            hyps = result.manifest["transcript"].fillna("").astype(str).tolist()
            wer, errors, words = word_error_rate(refs, hyps)
            rows.append({"corpus": corpus, "language": part["language"].iloc[0], "mode": mode, "clips": len(part),
                         "speakers": part["speaker"].nunique(), "sentences": part["text"].nunique(),
                         "ref_words": words, "errors": errors, "wer": wer, "decoded": result.n_computed,
                         "seconds": round(seconds, 1)})
            examples += [{"corpus": corpus, "mode": mode, "reference": r, "transcript": h}
                         for r, h in list(zip(refs, hyps))[:3]]
            print(f"{mode:9s} {corpus:8s} WER {wer:6.1%} ({errors}/{words} words, {len(part)} clips, "
                  f"{result.n_computed} decoded in {seconds:.0f} s)", flush=True)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "asr_wer.json").write_text(json.dumps({"model": args.model, "beams": args.beams, "rows": rows,
                                                      "examples": examples}, indent=2, ensure_ascii=False) + "\n")
    lines = [
        f"# ASR word error rate: {args.model}, {'greedy' if args.beams == 1 else f'beam {args.beams}'} decoding",
        "",
        f"Subset: {args.per_corpus} clips per corpus (fixed seed 0, spread over speaker x sentence pairs), "
        "references from the corpus documentation (see benchmarks/asr_wer.py). WER = word edits / reference "
        "words after lower-casing and removing punctuation. `manifest`: the corpus language given to "
        "Whisper; `detect`: Whisper detects it (scored on " + args.detect_corpora + "). Not scored: SAVEE, EMOVO (no sentence texts in the shared "
        "data), Urdu, ASED (no text).",
        "",
        "| corpus | language | mode | clips | speakers | sentences | ref. words | errors | WER |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['corpus']} | {r['language']} | {r['mode']} | {r['clips']} | {r['speakers']} | {r['sentences']} | "
              f"{r['ref_words']} | {r['errors']} | {r['wer']:.1%} |" for r in rows]
    lines += ["", "Examples (first three clips of each corpus and mode):", "",
              "| corpus | mode | reference | transcript |", "|---|---|---|---|"]
    lines += [f"| {e['corpus']} | {e['mode']} | {e['reference']} | {e['transcript']} |" for e in examples]
    total = sum(r["seconds"] for r in rows)
    lines += ["", f"Decoding time (this run, 2 shared CPU cores, nice 19): {total:.0f} s for "
              f"{sum(r['decoded'] for r in rows)} decoded clips (cached clips cost nothing)."]
    if args.note:
        lines += ["", args.note]
    (RESULTS / "asr_wer.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
