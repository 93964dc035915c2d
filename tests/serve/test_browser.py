"""End to end in headless Chromium: open the page, upload a real clip, see the label and bars.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package.
Skipped where they are missing, except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _missing() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "chromium and chromium-driver are not installed"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1000,1100",
                 # A fake microphone (a beeping test signal) that needs no permission prompt.
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager never looks for (or downloads) a driver.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_clip_and_see_the_result(browser, live_server, clip_path, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(live_server + "/")
    assert "polyemo" in browser.title
    wait.until(lambda d: "anger" in d.find_element(By.ID, "model-info").text)  # /v1/labels answered
    button = browser.find_element(By.ID, "predict-button")
    assert not button.is_enabled()  # nothing chosen yet

    browser.find_element(By.ID, "file-input").send_keys(str(clip_path))
    wait.until(ec.element_to_be_clickable((By.ID, "predict-button"))).click()
    wait.until(lambda d: d.find_element(By.ID, "label").text.strip() != "")

    label = browser.find_element(By.ID, "label").text.strip().lower()
    assert label in ("anger", "happiness", "neutral", "sadness")
    fills = browser.find_elements(By.CSS_SELECTOR, "#bars .bar-fill")
    assert sorted(f.get_attribute("data-class") for f in fills) == ["anger", "happiness", "neutral", "sadness"]
    widths = {f.get_attribute("data-class"): f.size["width"] for f in fills}
    track = browser.find_element(By.CSS_SELECTOR, "#bars .bar-track").size["width"]
    # The predicted class has the longest bar, drawn in proportion to its probability.
    assert max(widths, key=widths.get) == label and widths[label] > 0.25 * track
    values = [float(v.text.rstrip(" %")) for v in browser.find_elements(By.CSS_SELECTOR, "#bars .bar-value")]
    assert abs(sum(values) - 100) < 0.5
    assert browser.find_element(By.ID, "error").is_displayed() is False
    assert "s of audio" in browser.find_element(By.ID, "duration").text

    shot = Path(tmp_path_factory.getbasetemp()) / "web-page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_long_audio_shows_a_segment_timeline(browser, live_server, shared_corpora, tmp_path, tmp_path_factory):
    import numpy as np
    from polyemo_tiny_bundle import wav_bytes
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from polyemo.audio import load_audio
    from polyemo.segment import speech_segments

    # Three clips of a speaker the model never saw, with pauses between them.
    names = ["16a01Wb.flac", "16a01Tb.flac", "16a01Fc.flac"]
    gap = np.zeros(16000, dtype=np.float32)
    parts = []
    for name in names:
        parts += [load_audio(shared_corpora / "emodb" / "audio" / name), gap]
    recording = tmp_path / "conversation.wav"
    recording.write_bytes(wav_bytes(np.concatenate(parts)))
    expected = speech_segments(load_audio(recording))
    assert len(expected) >= 3

    browser.get(live_server + "/")
    browser.find_element(By.ID, "segment-input").click()
    browser.find_element(By.ID, "file-input").send_keys(str(recording))
    browser.find_element(By.ID, "predict-button").click()
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "timeline-section").is_displayed())
    segments = browser.find_elements(By.CSS_SELECTOR, "#timeline rect.segment")
    assert len(segments) == len(expected)  # one bar per speech segment
    starts = [float(s.get_attribute("x")) for s in segments]
    assert starts == sorted(starts) and starts[0] < 60  # in time order, the first near the start
    legend = {item.text for item in browser.find_elements(By.CSS_SELECTOR, "#legend span")}
    assert legend and legend <= {"anger", "happiness", "neutral", "sadness"}
    assert f"recording ({len(expected)} units)" in browser.find_element(By.ID, "norm-source").text
    shot = Path(tmp_path_factory.getbasetemp()) / "web-page-timeline.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")


def test_an_unusable_upload_shows_the_reason(browser, live_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"this is not audio" * 20)
    browser.get(live_server + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(junk))
    browser.find_element(By.ID, "predict-button").click()
    error = WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed() else None)
    assert "notes.wav" in error.text and "cannot decode" in error.text and "422" in error.text


def test_record_from_the_microphone(browser, live_server):
    """Record -> Stop: the browser turns the MediaRecorder output into 16 kHz WAV and uploads it."""
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server + "/")
    WebDriverWait(browser, 30).until(lambda d: "anger" in d.find_element(By.ID, "model-info").text)
    record = browser.find_element(By.ID, "record-button")
    record.click()
    WebDriverWait(browser, 10).until(lambda d: "Stop" in d.find_element(By.ID, "record-button").text)
    time.sleep(1.5)
    record.click()
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "label").text.strip() or d.find_element(By.ID, "error").is_displayed())
    assert not browser.find_element(By.ID, "error").is_displayed(), browser.find_element(By.ID, "error").text
    assert browser.find_element(By.ID, "label").text.strip().lower() in ("anger", "happiness", "neutral", "sadness")
    duration = float(browser.find_element(By.ID, "duration").text.split()[0])
    assert 1.0 <= duration <= 3.0  # about the 1.5 s recorded
    assert "recording.wav" in browser.find_element(By.ID, "status").text
