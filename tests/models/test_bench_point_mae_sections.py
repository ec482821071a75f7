"""tools/bench_point_mae.py rewrites only the section it measured."""
from tools.bench_point_mae import _replace_section


def test_replace_section_keeps_the_other_sections():
    text = _replace_section("# title\n", "svm", "svm v1")
    text = _replace_section(text, "throughput", "tp v1")
    assert text.index("svm v1") < text.index("tp v1")
    text = _replace_section(text, "svm", "svm v2\nline")
    assert "svm v1" not in text and "svm v2\nline" in text and "tp v1" in text and text.startswith("# title")
    assert text.count("<!-- svm -->") == 1 and text.count("<!-- /svm -->") == 1
