"""Two-sample testing with the kernel MMD: a fused permutation test with p-values, in O(n) memory.

    from wae_fast.stats import mmd_test
    res = mmd_test(x, y, "imq", permutations=1000, seed=0)
    res.statistic, res.p_value, res.null

    python -m wae_fast.stats x.npy y.npy --permutations 1000 [--plot null.png]

See wae_fast.stats.permutation for the test and its maths, wae_fast.stats.aggregate for the aggregated
tests over a collection of kernels (mmd_agg_test: MMD-FUSE and MMDAgg).
"""
from .aggregate import AggregatedTestResult, default_bandwidths, mmd_agg_test
from .labels import permutation_labels, permutations, unpack_labels
from .permutation import MMDTestResult, labelling_statistics, mmd_test, p_value, tie_tolerance

__all__ = ["MMDTestResult", "mmd_test", "permutations", "permutation_labels", "unpack_labels",
           "labelling_statistics", "p_value", "tie_tolerance", "mmd_agg_test", "AggregatedTestResult",
           "default_bandwidths"]
