import sys

sys.exit("the benchmarks are not written yet")
