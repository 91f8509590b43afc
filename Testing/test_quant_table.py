"""The per-modality table of several models: means over cases, and the held-out column."""

from training.evaluation.quant_table import markdown


def test_table_averages_cases_per_modality_and_held_out():
    cases = [{"case": "2DBox_CT_a-1", "modality": "CT", "dsc": 0.9, "nsd": 0.5},
             {"case": "2DBox_CT_b-2", "modality": "CT", "dsc": 0.5, "nsd": 0.1},
             {"case": "2DBox_US_c-3", "modality": "US", "dsc": 0.6, "nsd": 0.3}]
    table = markdown([{"model": "m", "cases": cases, "engine_seconds": 1.0}], held_out=["b-2", "c-3"])
    header, rule, row = table.splitlines()
    assert header == "| model | CT | US | mean DSC | mean NSD | held-out DSC |"
    assert row == "| `m` | 0.7000 | 0.6000 | 0.6667 | 0.3000 | 0.5500 |"
    assert "held-out" not in markdown([{"model": "m", "cases": cases, "engine_seconds": 1.0}], held_out=[])
