"""The shared BENCHMARKS.md writer of the benchmark commands."""

from benchmarks import report


def test_sections_are_appended_then_replaced_in_place(tmp_path, monkeypatch):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    monkeypatch.setattr(report, "BENCHMARKS_MD", md)
    report.update_section("x", "## X\n\nMethod.", "| a |\n|---|\n| 1 |")
    report.update_section("y", "## Y", "y1")
    report.update_section("x", "## X (ignored once present)", "| a |\n|---|\n| 2 |")
    assert md.read_text() == ("# Benchmarks\n\n## Other\n\nkept\n\n## X\n\nMethod.\n\n"
                              "<!-- x table begin -->\n| a |\n|---|\n| 2 |\n<!-- x table end -->\n\n"
                              "## Y\n\n<!-- y table begin -->\ny1\n<!-- y table end -->\n")
