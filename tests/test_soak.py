"""The soak benchmark's 2-minute version (`make soak MINUTES=2`): the whole pipeline
with the real models on looped corpus speech with barge-ins, in real time. Nothing is
lost, nothing fails, nothing piles up."""
import asyncio

from eval.soak import soak
from tests.conftest import DEFAULT_CONFIG


def test_two_minute_soak(tmp_path):
    result = asyncio.run(soak(str(DEFAULT_CONFIG), minutes=2.0, interval_s=30.0, out=tmp_path))
    assert result["turns"] >= 8 and result["interrupted"] >= 1  # it talked, and was cut in on
    assert result["lost_lines"] == 0 and result["transcript_lines"] == result["turns"]
    assert result["errors"] == 0
    assert len(result["samples"]) >= 3
    # threads and descriptors do not pile up from one sample to the next
    assert max(s["tasks"] for s in result["samples"]) <= result["samples"][0]["tasks"] + 2
    assert max(s["fds"] for s in result["samples"]) <= result["samples"][0]["fds"] + 2
    assert (tmp_path / "soak.json").is_file() and (tmp_path / "soak.png").stat().st_size > 0
