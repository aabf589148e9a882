"""The web page, in real headless Chromium (Debian's chromium and chromium-driver, driven
by Selenium): a fake microphone fed from a corpus WAV speaks to the page; the page
streams it to the server, plays the spoken reply, and shows both transcripts and the
turn's V2V as measured in the browser. The screenshot is kept in
out/test-artifacts/web_page.png."""
import shutil
import time

import numpy as np
import pytest

from eval.realtime_client import ServerProcess
from eval.wer import wer
from pipeline.audio import read_wav, write_wav
from tests.conftest import ROOT

ARTIFACTS = ROOT / "out" / "test-artifacts"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("web")
    with ServerProcess("configs/default.yaml", work, sessions_dir=str(work / "sessions")) as srv:
        yield srv
    assert "Traceback" not in srv.output, srv.output


def browser(mic_wav):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1000,900",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={mic_wav}%noloop",
                "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def test_the_page_hears_the_microphone_and_plays_a_spoken_reply(server, corpus, tmp_path):
    clip = next(c for c in corpus if c.id == "vctk_p238_165")
    speech = read_wav(clip.path)
    mic = tmp_path / "mic.wav"
    write_wav(mic, np.concatenate([np.zeros(16000, np.float32), speech,
                                   np.zeros(16000 * 8, np.float32)]), 16000)
    driver = browser(mic)
    try:
        driver.get(server.url("/"))
        driver.find_element("id", "start").click()
        deadline = time.monotonic() + 60
        turns = []
        while time.monotonic() < deadline:
            turns = driver.execute_script("return window.cascade.turns")
            if turns:
                break
            time.sleep(0.25)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        time.sleep(0.5)
        driver.save_screenshot(str(ARTIFACTS / "web_page.png"))
        state = driver.execute_script("return window.cascade")
        text = driver.find_element("id", "transcript").text
        rows = driver.find_elements("css selector", "#turns tr")
        bars = driver.find_elements("css selector", "#turns .seg")
    finally:
        driver.quit()
    assert not state["errors"], state["errors"]
    assert turns, (state["status"], state["events"][-20:])
    [turn] = turns[:1]
    assert turn["status"] == "answered" and turn["assistant"]
    # the browser measured its own V2V: after the server's (the page schedules the audio
    # it receives), and not by seconds
    assert turn["v2v_browser_ms"] is not None and turn["v2v_server_ms"] is not None
    assert 0 < turn["v2v_browser_ms"] < turn["v2v_server_ms"] + 1500, turn
    assert wer([clip.text], [turn["user"]]) < 0.3  # the page streamed the microphone
    assert f"you: {turn['user']}" in text and "assistant: " in text
    assert len(rows) >= 1 and len(bars) >= 4  # the turn's row and its waterfall
    assert "input_audio_buffer.speech_started" in state["events"]
    assert "response.output_audio.delta" in state["events"]
    assert (ARTIFACTS / "web_page.png").stat().st_size > 10_000
