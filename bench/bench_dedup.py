"""Benchmark: near-duplicate search, all pairs (the previous method) vs multi-index hashing (the project's).

Random 64-bit pHash/dHash values with planted near-duplicates (a few bits flipped), the default limits (pHash <= 4,
dHash <= 6). Both methods must return the same pairs; all-pairs is quadratic, so beyond --max-all-pairs it is
not run and its time is extrapolated from the largest measured size (marked "~").

    python bench/bench_dedup.py                    # 8k, 32k, 64k, 1M hashes
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from baselines import all_pairs

from trustthepixels.data.audit.dedup import near_pairs


def hashes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    dhash = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    planted = rng.choice(n, n // 20, replace=False)  # 5% are near-copies of another image
    sources = rng.integers(0, n, len(planted))
    for target, source in zip(planted, sources, strict=True):
        flips = [rng.choice(64, rng.integers(0, k + 1), replace=False) for k in (5, 7)]
        masks = [np.uint64(sum(1 << int(b) for b in f)) for f in flips]
        phash[target], dhash[target] = phash[source] ^ masks[0], dhash[source] ^ masks[1]
    return phash, dhash


def timed(fn, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8_000, 32_000, 64_000, 1_000_000])
    parser.add_argument("--max-all-pairs", type=int, default=64_000)
    args = parser.parse_args()
    print(f"{'hashes':>10}{'pairs':>9}{'all pairs':>13}{'multi-index':>13}{'speed-up':>10}  same pairs")
    last: tuple[int, float] | None = None
    for n in args.sizes:
        phash, dhash = hashes(n)
        fast, pairs = timed(near_pairs, phash, dhash, 4, 6)
        if n <= args.max_all_pairs:
            slow, reference = timed(all_pairs, phash, dhash, 4, 6)
            same = np.array_equal(np.unique(np.sort(reference, axis=1), axis=0), pairs)
            last, shown = (n, slow), f"{slow:12.2f}s"
        else:
            slow = last[1] * (n / last[0]) ** 2 if last else float("nan")
            same, shown = "not run", f"~{slow:11.0f}s"
        print(f"{n:>10,}{len(pairs):>9,}{shown:>13}{fast:12.2f}s{slow / fast:9.0f}x  {same}")


if __name__ == "__main__":
    main()
