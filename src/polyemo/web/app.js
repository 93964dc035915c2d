// polyemo web page: upload or record audio, POST it to /v1/predict, draw the result.
// Plain DOM and SVG, no libraries and no network access beyond this server.
"use strict";

const COLOURS = {
  anger: "#e03131", boredom: "#a47148", calm: "#38d9a9", contempt: "#9c36b5",
  disgust: "#5c940d", fear: "#7048e8", happiness: "#f59f00", neutral: "#868e96",
  sadness: "#1c7ed6", surprise: "#f783ac", other: "#495057",
};
const FALLBACK = ["#e8590c", "#0ca678", "#ae3ec9", "#3bc9db", "#fab005", "#495057"];

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

let classes = [];
let recorded = null; // {blob, name} of the last microphone recording

function colourOf(name) {
  if (COLOURS[name]) return COLOURS[name];
  const index = Math.max(0, classes.indexOf(name));
  return FALLBACK[index % FALLBACK.length];
}

function setStatus(text) { $("status").textContent = text; }

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = !text;
}

async function loadModelInfo() {
  try {
    const response = await fetch("/v1/labels");
    const info = await response.json();
    classes = info.classes || [];
    const model = info.model || {};
    const parts = [model.name, model.encoder && `encoder ${model.encoder}`,
      model.languages && model.languages.length ? `languages ${model.languages.join(", ")}` : null,
      classes.length ? `classes: ${classes.join(", ")}` : null].filter(Boolean);
    $("model-info").textContent = parts.join(" · ");
  } catch (err) {
    $("model-info").textContent = "Model information unavailable: " + err;
  }
}

async function predict(blob, name) {
  showError("");
  setStatus(`Analysing ${name}…`);
  $("predict-button").disabled = true;
  const form = new FormData();
  form.append("file", blob, name);
  const segment = $("segment-input").checked ? "true" : "auto";
  try {
    const response = await fetch(`/v1/predict?segment=${segment}`, { method: "POST", body: form });
    let body;
    try { body = await response.json(); } catch (_) { body = { detail: response.statusText }; }
    if (!response.ok) {
      setStatus("");
      showError(`Could not analyse ${name}: ${body.detail || response.statusText} (HTTP ${response.status})`);
      return;
    }
    render(body);
    setStatus(`Analysed ${name}.`);
  } catch (err) {
    setStatus("");
    showError(`Request failed: ${err}`);
  } finally {
    $("predict-button").disabled = !currentInput();
  }
}

function render(prediction) {
  $("result").hidden = false;
  $("label").textContent = prediction.label;
  $("label").style.color = colourOf(prediction.label);
  const probs = prediction.probabilities || {};
  const top = probs[prediction.label];
  $("confidence").textContent = top !== undefined ? `${(100 * top).toFixed(0)} %` : "";
  $("duration").textContent = prediction.duration ? `${prediction.duration.toFixed(1)} s of audio` : "";
  renderBars(probs, prediction.label);
  renderDimensions(prediction);
  renderTimeline(prediction.segments, prediction.duration);
  $("norm-source").textContent = prediction.norm_source ? `Normalisation: ${prediction.norm_source}` : "";
}

function renderBars(probs, best) {
  const bars = $("bars");
  bars.replaceChildren();
  const names = Object.keys(probs).sort((a, b) => probs[b] - probs[a]);
  for (const name of names) {
    const value = probs[name];
    const row = name === best ? " bar-row-top" : "";
    const label = document.createElement("span");
    label.className = "bar-name" + row;
    label.textContent = name;
    const track = document.createElement("div");
    track.className = "bar-track";
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.dataset.class = name;
    fill.style.width = `${(100 * value).toFixed(1)}%`;
    fill.style.background = colourOf(name);
    track.append(fill);
    const number = document.createElement("span");
    number.className = "bar-value";
    number.textContent = `${(100 * value).toFixed(1)} %`;
    if (row) { label.classList.add("bar-row-top"); }
    bars.append(label, track, number);
  }
}

function renderDimensions(prediction) {
  const box = $("dimensions");
  box.replaceChildren();
  for (const dim of ["arousal", "valence", "dominance"]) {
    if (typeof prediction[dim] === "number") {
      const item = document.createElement("span");
      const name = document.createElement("b");
      name.textContent = dim;
      item.append(name, `: ${prediction[dim].toFixed(2)}`);
      box.append(item);
    }
  }
  box.hidden = box.childElementCount === 0;
}

function renderTimeline(segments, duration) {
  const section = $("timeline-section");
  const svg = $("timeline");
  svg.replaceChildren();
  $("legend").replaceChildren();
  if (!segments || segments.length === 0 || !duration) { section.hidden = true; return; }
  section.hidden = false;
  const width = 700, height = 70, top = 8, barHeight = 34;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const x = (t) => (t / duration) * width;
  const base = document.createElementNS(SVG_NS, "rect");
  Object.entries({ x: 0, y: top, width, height: barHeight, fill: "#eceff3" }).forEach(([k, v]) => base.setAttribute(k, v));
  svg.append(base);
  const seen = new Set();
  for (const seg of segments) {
    const rect = document.createElementNS(SVG_NS, "rect");
    const attrs = { x: x(seg.start), y: top, width: Math.max(1, x(seg.end) - x(seg.start)), height: barHeight,
      fill: colourOf(seg.label), class: "segment" };
    Object.entries(attrs).forEach(([k, v]) => rect.setAttribute(k, v));
    const title = document.createElementNS(SVG_NS, "title");
    const p = seg.probabilities ? seg.probabilities[seg.label] : undefined;
    title.textContent = `${seg.start.toFixed(1)}–${seg.end.toFixed(1)} s: ${seg.label}` + (p !== undefined ? ` (${(100 * p).toFixed(0)} %)` : "");
    rect.append(title);
    svg.append(rect);
    seen.add(seg.label);
  }
  const ticks = Math.min(10, Math.max(2, Math.floor(duration / 5)));
  for (let i = 0; i <= ticks; i++) {
    const t = (duration * i) / ticks;
    const text = document.createElementNS(SVG_NS, "text");
    text.setAttribute("x", Math.min(width - 18, x(t)));
    text.setAttribute("y", height - 6);
    text.textContent = `${t.toFixed(0)}s`;
    svg.append(text);
  }
  for (const name of seen) {
    const item = document.createElement("span");
    item.style.setProperty("--swatch", colourOf(name));
    item.textContent = name;
    $("legend").append(item);
  }
}

function currentInput() {
  const file = $("file-input").files[0];
  if (file) return { blob: file, name: file.name };
  return recorded;
}

// Microphone: MediaRecorder gives WebM/Ogg Opus, which the server's decoder does not read,
// so the browser decodes it and uploads 16 kHz 16-bit WAV.
let recorder = null;
let recordStarted = 0;
let recordTimer = null;

async function toggleRecording() {
  if (recorder && recorder.state === "recording") { recorder.stop(); return; }
  showError("");
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    showError("Recording needs a browser with microphone access (MediaRecorder) on https or localhost.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError(`Microphone unavailable: ${err.message || err}`);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
  recorder.onstop = async () => {
    stream.getTracks().forEach((track) => track.stop());
    clearInterval(recordTimer);
    $("record-button").classList.remove("recording");
    $("record-button").textContent = "● Record";
    $("record-time").hidden = true;
    try {
      const wav = await toWav(new Blob(chunks, { type: recorder.mimeType }));
      recorded = { blob: wav, name: "recording.wav" };
      $("file-input").value = "";
      await predict(wav, "recording.wav");
    } catch (err) {
      showError(`Could not read the recording: ${err.message || err}`);
    }
  };
  recorder.start();
  recordStarted = performance.now();
  $("record-button").classList.add("recording");
  $("record-button").textContent = "■ Stop";
  $("record-time").hidden = false;
  recordTimer = setInterval(() => {
    $("record-time").textContent = `${((performance.now() - recordStarted) / 1000).toFixed(1)} s`;
  }, 100);
  setStatus("Recording… press Stop when done.");
}

async function toWav(blob) {
  const context = new AudioContext();
  let decoded;
  try { decoded = await context.decodeAudioData(await blob.arrayBuffer()); } finally { context.close(); }
  const rate = 16000;
  const offline = new OfflineAudioContext(1, Math.max(1, Math.ceil(decoded.duration * rate)), rate);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const samples = (await offline.startRendering()).getChannelData(0);
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const ascii = (offset, text) => [...text].forEach((c, i) => view.setUint8(offset + i, c.charCodeAt(0)));
  ascii(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); ascii(8, "WAVE");
  ascii(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  ascii(36, "data"); view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

$("file-input").addEventListener("change", () => {
  recorded = null;
  $("predict-button").disabled = !currentInput();
});
$("predict-button").addEventListener("click", () => {
  const input = currentInput();
  if (input) predict(input.blob, input.name);
});
$("record-button").addEventListener("click", toggleRecording);
loadModelInfo();
