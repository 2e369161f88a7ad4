"""benchmarks/protocol.py: the pure parts (cpuinfo parsing, ISA caps, statistics, the contended
verdict), against canned /proc/cpuinfo text and hand-computed numbers."""

import pytest

from benchmarks import protocol

# Two processors of a Zen 4 guest, trimmed: the first processor's model and flags count.
ZEN4 = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 9R14 96-Core Processor
flags		: fpu sse2 avx f16c avx2 bmi2 avx512f avx512dq avx512_bf16 vaes
bogomips	: 5200.00

processor	: 1
model name	: Another Name
flags		: fpu sse2
"""
ZEN3 = """processor	: 0
model name	: AMD EPYC
flags		: fpu sse2 avx f16c bmi1 avx2 smep bmi2 vaes vpclmulqdq rdpid fsrm
"""
SPR = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ARM = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes sve\n"


def test_parse_cpuinfo_takes_the_first_processor():
  model, flags = protocol.parse_cpuinfo(ZEN4)
  assert model == "AMD EPYC 9R14 96-Core Processor"
  assert {"avx2", "avx512f", "avx512_bf16"} <= flags and "amx_tile" not in flags
  assert protocol.parse_cpuinfo(SPR)[1] >= {"amx_tile", "avx512f"}


def test_parse_cpuinfo_without_x86_fields():
  model, flags = protocol.parse_cpuinfo(ARM)
  assert model == "unknown CPU" and "sve" in flags and "avx2" not in flags
  assert protocol.parse_cpuinfo("") == ("unknown CPU", frozenset())


def test_machine_class_follows_flags_and_caps():
  zen4, zen3 = protocol.parse_cpuinfo(ZEN4)[1], protocol.parse_cpuinfo(ZEN3)[1]
  assert protocol.machine_class(zen4, 2, "") == "2-core AVX-512"
  assert protocol.machine_class(zen3, 2, "") == "2-core AVX2"
  capped = protocol.isa_cap({"XLA_FLAGS": "--xla_force_host_platform_device_count=8 "
                                          "--xla_cpu_max_isa=AVX2", "ATEN_CPU_CAPABILITY": "avx2"})
  assert capped == "XLA_FLAGS=--xla_cpu_max_isa=AVX2 ATEN_CPU_CAPABILITY=avx2"
  assert protocol.machine_class(zen4, 2, capped) == "2-core AVX2 (AVX-512 capped to AVX2)"
  assert protocol.machine_class(zen3, 16, capped) == "16-core AVX2"
  assert protocol.machine_class(frozenset({"sse2"}), 4, "") == "4-core no-AVX2"


def test_isa_cap_ignores_unrelated_xla_flags():
  assert protocol.isa_cap({"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}) == ""
  assert protocol.isa_cap({}) == ""
  assert protocol.isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "ONEDNN_MAX_CPU_ISA=AVX2"


def test_contended_threshold_scales_with_cores():
  assert protocol.is_contended([0.3, 2.4, 2.5], 2) is False  # 2.5 is the limit itself
  assert protocol.is_contended([0.3, 2.51], 2) is True       # any sample over it counts
  assert protocol.is_contended([4.9], 4) is False and protocol.is_contended([5.1], 4) is True
  assert protocol.is_contended([], 2) is False


def test_stats_and_ratios():
  s = protocol.Stats.of([3.0, 1.0, 2.0, 10.0])
  assert (s.best, s.median, s.rounds) == (1.0, 2.5, 4)
  base = protocol.Stats.of([2.0, 4.0, 3.0])  # best 2, median 3
  best_ratio, median_ratio = protocol.ratios(s, base)
  assert best_ratio == pytest.approx(2.0) and median_ratio == pytest.approx(1.2)
  with pytest.raises(ValueError, match="no rounds"):
    protocol.Stats.of([])


def test_interleaved_alternates_and_compare_scales_by_work(capsys, monkeypatch):
  monkeypatch.setattr(protocol.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
  run = protocol.Run("test", cpuinfo=ZEN3)
  order = []
  times = run.interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                          rounds=3)
  assert order == ["a", "b"] + ["a", "b"] * 3  # warm-up, then alternating rounds
  assert [len(t) for t in times.values()] == [3, 3]
  # b does twice the work in the same time: twice a's rate.
  run.compare({"a": [1.0, 2.0], "b": [1.0, 2.0]}, baseline="a", work={"a": 1.0, "b": 2.0})
  out = capsys.readouterr().out
  assert "xa: 2.00 best, 2.00 median" in out and "load before: 0.50" in out
  assert run.finish() is False
  monkeypatch.setattr(protocol.os, "getloadavg", lambda: (2.6, 1.0, 1.0))
  assert run.finish() is True and "CONTENDED" in capsys.readouterr().out
