"""``hvdtrain bench``: measurements that carry their baseline, taken in the same run.

Horovod's synthetic benchmark multiplies rank 0's speed by the number of ranks; these measure.
Each benchmark runs its contenders interleaved (A, B, A, B, ...) inside the same ranks, so a
noisy neighbour slows both alike, and reports medians and the ratio to the baseline.
"""
