"""Is one model better than another on the same cases, or is the difference noise of the cases?

    python -m training.evaluation.paired_bootstrap --scores docs/measurements/test-split.json --metric dsc \\
        litemedsam-int8-ptq:litemedsam-fp32 litemedsam-nncf-int8:litemedsam-fp32 \\
        litemedsam-int8-ptq:litemedsam-nncf-int8 --json docs/measurements/test-split-bootstrap.json
    python -m training.evaluation.paired_bootstrap --segs runs/dfq/models/segs \\
        w6a6-synthetic-reparam:w6a6-noise-reparam w8a8-real-reparam:w8a8-synthetic-reparam

For each pair A:B the per-case differences A − B are resampled with replacement (a paired bootstrap over
cases) for an interval of the mean difference. Pairing removes what the cases have in common (a hard case
is hard for both models), which is why it resolves differences that the two means alone cannot. Scores come
from a training.evaluation.split_eval JSON (per-case DSC, NSD or agreement with FP32), or, with --segs, are
each case's agreement with the reference masks computed from the masks training.dfq.table keeps.

The interval is Efron's bias-corrected and accelerated (BCa) percentile interval: the mean of per-case
Dice differences is skewed when one case swings a lot (a quantized model losing a fundus vessel tree), and
the bootstrap distribution of a skewed statistic is shifted and stretched to one side, so plain percentiles
under-cover; BCa corrects the shift (z0, from how many bootstrap means fall below the observed one) and the
skew (the acceleration, from the jackknife), and equals the percentile interval when both are zero. With
several pairs, each interval is at the Bonferroni level 1 − α/m (m = the number of pairs asked together), so
that all m intervals hold at once with probability ≥ 1 − α; Holm's step-down is sharper for yes/no tests but
gives no intervals of its own.
"""

from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Sequence

import numpy as np
from qmedsam.metrics import label_agreement
from qmedsam.npz_io import npz_files_in, read_npz_arrays

from training.provenance import REPO_ROOT, invoked_command

REFERENCE = "litemedsam-fp32"
FAMILY_LEVEL = 0.95  # the probability that every interval of one command holds at once
RESAMPLES = 10_000
METRICS = ("dsc", "nsd", "agreement")


def per_case_agreement(reference: Path, segs: Path) -> dict[str, float]:
    """Label-wise Dice between each case's masks in segs and in reference, by file name."""
    agreement = {}
    for path in npz_files_in(reference):
        if not (segs / path.name).exists():
            raise SystemExit(f"{segs} has no masks for {path.name}; score that model again with training.dfq.table")
        ours, theirs = (read_npz_arrays(p, ["segs"], role="Masks", needs="masks hold 'segs'")["segs"]
                        for p in (path, segs / path.name))
        agreement[path.name] = label_agreement(ours, theirs)
    return agreement


def per_case_scores(document: dict, model: str, metric: str, source: str | None = None) -> dict[str, float]:
    """{case: metric} of one model of a training.evaluation.split_eval JSON document (only the cases from
    `source`, "pool" or "shared", when given)."""
    found = [result for result in document["results"] if model in (result["model"], result.get("build"))]
    if len(found) != 1:
        models = ", ".join(result.get("build", result["model"]) for result in document["results"])
        raise SystemExit(f"the scores file holds {len(found)} results for {model!r} (builds: {models}); "
                         "name a model it holds once or one of its builds, or run training.evaluation.split_eval.")
    return {row["case"]: row[metric] for row in found[0]["cases"] if source in (None, row["source"])}


def bca_interval(bootstrap: np.ndarray, observed: float, jackknife: np.ndarray, level: float) -> tuple[float, float]:
    """Efron's BCa interval of a statistic from its bootstrap replicates and its leave-one-out (jackknife) values.

    z0 = Φ⁻¹(share of replicates below the observed value, ties counted half) corrects the median bias; the
    acceleration a = Σ(mean − θᵢ)³ / (6 (Σ(mean − θᵢ)²)^1.5) corrects the skew. The interval is the
    replicates' quantiles Φ(z0 + (z0 + z)/(1 − a (z0 + z))) at z = Φ⁻¹ of the two tails.
    """
    normal = NormalDist()
    count = len(bootstrap)
    below = np.mean(bootstrap < observed) + 0.5 * np.mean(bootstrap == observed)
    z0 = normal.inv_cdf(float(np.clip(below, 0.5 / count, 1 - 0.5 / count)))  # finite at either extreme
    spread = jackknife.mean() - jackknife
    scale = 6.0 * float((spread ** 2).sum()) ** 1.5
    acceleration = float((spread ** 3).sum()) / scale if scale > 0 else 0.0
    tails = []
    for tail in ((1 - level) / 2, (1 + level) / 2):
        shifted = z0 + normal.inv_cdf(tail)
        tails.append(normal.cdf(z0 + shifted / (1 - acceleration * shifted)))
    low, high = np.quantile(bootstrap, tails)
    return float(low), float(high)


@dataclass(frozen=True)
class PairedDifference:
    mean: float
    low: float
    high: float
    level: float  # the interval's own confidence level (Bonferroni-adjusted when several pairs were asked)
    wins: int  # cases where A scores higher than B
    losses: int
    cases: int

    def __str__(self) -> str:
        return (f"{self.mean:+.4f} [{100 * self.level:.2f} % BCa {self.low:+.4f}, {self.high:+.4f}], "
                f"higher on {self.wins}/{self.cases} cases, lower on {self.losses}")


def paired_difference(a: dict[str, float], b: dict[str, float], level: float = FAMILY_LEVEL,
                      resamples: int = RESAMPLES, seed: int = 0) -> PairedDifference:
    """The mean of A − B over the shared cases, with its BCa bootstrap interval at `level`."""
    if a.keys() != b.keys():
        raise ValueError("the two models were scored on different cases")
    differences = np.array([a[case] - b[case] for case in sorted(a)])
    count = len(differences)
    picks = np.random.default_rng(seed).integers(0, count, size=(resamples, count))
    means = differences[picks].mean(axis=1)
    jackknife = (differences.sum() - differences) / max(count - 1, 1)
    low, high = bca_interval(means, float(differences.mean()), jackknife, level)
    return PairedDifference(float(differences.mean()), low, high, level, int((differences > 0).sum()),
                            int((differences < 0).sum()), count)


def bonferroni_level(family_level: float, comparisons: int) -> float:
    """Each interval's level so that all `comparisons` intervals hold together with probability ≥ family_level."""
    return 1 - (1 - family_level) / comparisons


def compare_pairs(scores: dict[str, dict[str, float]], pairs: Sequence[tuple[str, str]],
                  family_level: float = FAMILY_LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> list[dict]:
    """Every pair's paired difference, each interval at the Bonferroni level for len(pairs) comparisons."""
    level = bonferroni_level(family_level, len(pairs))
    return [{"a": a, "b": b, **asdict(paired_difference(scores[a], scores[b], level, resamples, seed))}
            for a, b in pairs]


def _pairs(specs: Sequence[str], where: str) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        names = spec.split(":")
        if len(names) != 2 or not all(names):
            raise SystemExit(f"{spec!r}: give a pair as A:B, two model names of {where}")
        pairs.append((names[0], names[1]))
    return pairs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", nargs="+", metavar="A:B", help="two model names (of --scores or of --segs)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--scores", type=Path, help="a training.evaluation.split_eval JSON: per-case scores")
    source.add_argument("--segs", type=Path, default=REPO_ROOT / "runs" / "dfq" / "models" / "segs",
                        help="folders of masks per model (training.dfq.table); the score is agreement with --reference")
    parser.add_argument("--metric", choices=METRICS, default="dsc", help="which per-case score of --scores")
    parser.add_argument("--source", choices=("pool", "shared"), default=None,
                        help="only the --scores cases from the pool or from ../shared/data (default: all)")
    parser.add_argument("--reference", default=REFERENCE)
    parser.add_argument("--family-level", type=float, default=FAMILY_LEVEL,
                        help="all intervals of this command hold together with this probability (Bonferroni)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the differences and per-case scores here")
    args = parser.parse_args(argv)

    pairs = _pairs(args.pairs, args.scores or args.segs)
    names = sorted({name for pair in pairs for name in pair})
    if args.scores:
        raw = args.scores.read_bytes()  # a committed split_eval JSON may be gzip-compressed (.json.gz)
        document = json.loads(gzip.decompress(raw) if args.scores.suffix == ".gz" else raw)
        scores = {name: per_case_scores(document, name, args.metric, args.source) for name in names}
        metric = args.metric + (f", {args.source} cases only" if args.source else "")
    else:  # a missing folder is reported by per_case_agreement, case by case
        scores = {name: per_case_agreement(args.segs / args.reference, args.segs / name) for name in names}
        metric = f"agreement with {args.reference}"
    rows = compare_pairs(scores, pairs, args.family_level, args.resamples, args.seed)
    for row in rows:
        fields = {key: row[key] for key in ("mean", "low", "high", "level", "wins", "losses", "cases")}
        print(f"{row['a']} − {row['b']} ({metric}): {PairedDifference(**fields)}")
    if args.json:
        args.json.write_text(json.dumps({
            "command": invoked_command(), "metric": metric, "method": "paired bootstrap over cases, BCa interval",
            "family_level": args.family_level, "comparisons": len(pairs), "correction": "Bonferroni",
            "resamples": args.resamples, "seed": args.seed, "differences": rows, "per_case": scores}, indent=1) + "\n")


if __name__ == "__main__":
    main()
