"""Benchmark machinery behind `posetrack bench` and benchmarks/*.py, one module per job:

    synthetic.py    synthetic clips of N walking figures with exact boxes and keypoints; the stub detector
    timed.py        timed wrappers for the reader and writer side (decode, write, render)
    runs.py         the sequential and the pipelined run loops -> BenchRun
    report.py       the JSON record and its text / Markdown tables
    environment.py  machine, software, load average, command line and the pipeline's setup
"""
