// Cascade's web page: the Realtime API from a browser, nothing fetched from elsewhere.
'use strict';
const RATE = 24000;
const PHASES = [  // [timeline phase, colour]
  ['endpoint', '#9e9e9e'], ['asr_final', '#5c8ed6'], ['llm_first_token', '#e0a030'],
  ['first_sentence', '#d86b5b'], ['tts_first_audio', '#8a5cd6'], ['playback_start', '#2e9e52']];
const state = {
  status: 'not connected', turns: [], errors: [], events: [],
  user: [], assistant: [],
};
window.cascade = state;  // read by the tests (and handy in the console)

let ws = null, ctx = null, stream = null, micNode = null;
let captureStart = null;      // AudioContext frame of the first sample sent
let ready = false;            // the session has started
const early = [];             // microphone blocks captured before it had
let playEnd = 0;              // AudioContext time the queued reply audio ends
let sources = [];             // scheduled reply buffers (stopped at once on barge-in)
let lastStopMs = null;        // audio_end_ms of the newest speech_stopped
const responses = {};         // response_id -> {endAt, firstAt, row, line}

const $ = (id) => document.getElementById(id);
function setStatus(text) { state.status = text; $('status').textContent = text; }

function b64FromPcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    pcm[i] = s < 0 ? s * 32768 : s * 32767;
  }
  let bin = '';
  const bytes = new Uint8Array(pcm.buffer);
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

function floatFromB64(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const pcm = new Int16Array(bytes.buffer);
  const out = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
  return out;
}

function line(cls, text) {
  const p = document.createElement('div');
  p.className = cls;
  p.textContent = text;
  $('transcript').appendChild(p);
  p.scrollIntoView({block: 'end'});
  return p;
}

function flushPlayback() {
  for (const s of sources) { try { s.stop(); } catch (e) { /* already ended */ } }
  sources = [];
  playEnd = 0;
}

function play(resp, b64) {
  const samples = floatFromB64(b64);
  if (!samples.length) return;
  const buf = ctx.createBuffer(1, samples.length, RATE);
  buf.copyToChannel(samples, 0);
  const src = ctx.createBufferSource();
  src.buffer = buf;
  src.connect(ctx.destination);
  const at = Math.max(ctx.currentTime + 0.01, playEnd);
  src.start(at);
  src.onended = () => { sources = sources.filter((s) => s !== src); };
  sources.push(src);
  playEnd = at + buf.duration;
  if (resp && resp.firstAt === null) {
    resp.firstAt = at + (ctx.outputLatency || 0);  // when it leaves the audio output
    if (resp.endAt !== null) {
      resp.v2v = Math.round((resp.firstAt - resp.endAt) * 1000);
    }
  }
}

function waterfall(tl) {
  const bar = document.createElement('div');
  bar.className = 'bar';
  const t0 = tl.user_speech_end;
  let prev = 0;
  for (const [name, colour] of PHASES) {
    const t = tl[name];
    if (t === null || t === undefined || t0 === null) continue;
    const ms = Math.max(0, (t - t0) * 1000);
    const seg = document.createElement('div');
    seg.className = 'seg';
    seg.title = `${name}: ${Math.round(ms)} ms`;
    seg.style.left = `${Math.min(prev, ms) / 4}px`;
    seg.style.width = `${Math.max(1, (ms - Math.min(prev, ms)) / 4)}px`;
    seg.style.background = colour;
    bar.appendChild(seg);
    prev = Math.max(prev, ms);
  }
  return bar;
}

function onEvent(ev) {
  state.events.push(ev.type);
  const resp = ev.response_id ? responses[ev.response_id] : null;
  switch (ev.type) {
    case 'session.created':
      ready = true;  // what was captured while the session started is sent now
      for (const b of early.splice(0)) sendAudio(b);
      setStatus('listening');
      break;
    case 'input_audio_buffer.speech_started':
      flushPlayback();  // barge-in: nothing more of the reply is heard
      setStatus('hearing you');
      break;
    case 'input_audio_buffer.speech_stopped':
      lastStopMs = ev.audio_end_ms;
      setStatus('thinking');
      break;
    case 'conversation.item.input_audio_transcription.completed':
      if (ev.transcript) { state.user.push(ev.transcript); line('user', 'you: ' + ev.transcript); }
      break;
    case 'response.created':
      responses[ev.response.id] = {
        endAt: lastStopMs === null || captureStart === null ? null
          : captureStart / RATE + lastStopMs / 1000,
        firstAt: null, v2v: null, text: '', line: null};
      break;
    case 'response.output_audio.delta':
      play(resp, ev.delta);
      setStatus('speaking');
      break;
    case 'response.output_audio_transcript.delta':
      if (resp) {
        resp.text += ev.delta;
        if (!resp.line) resp.line = line('assistant', '');
        resp.line.textContent = 'assistant: ' + resp.text;
      }
      break;
    case 'response.done': {
      const r = responses[ev.response.id];
      if (r && r.text) state.assistant.push(r.text);
      setStatus('listening');
      break;
    }
    case 'cascade.turn.timeline': {
      const tl = ev.timeline;
      if (tl.playback_start === null) break;  // no reply was played
      const r = ev.response_id ? responses[ev.response_id] : null;
      const row = document.createElement('tr');
      const browser = r ? r.v2v : null;
      state.turns.push({turn_id: ev.turn.turn_id, status: ev.turn.status, user: ev.turn.user,
                        assistant: ev.turn.assistant, v2v_browser_ms: browser,
                        v2v_server_ms: tl.v2v_ms});
      row.innerHTML = `<td>${ev.turn.turn_id}</td><td>${browser === null ? '-' : browser + ' ms'}</td>` +
        `<td>${tl.v2v_ms === null ? '-' : Math.round(tl.v2v_ms) + ' ms'}</td><td></td>`;
      row.lastChild.appendChild(waterfall(tl));
      $('turns').appendChild(row);
      break;
    }
    case 'error':
      state.errors.push(ev.error);
      line('note', `error: ${ev.error.message}`);
      break;
  }
}

function sendAudio(samples) {
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({type: 'input_audio_buffer.append', audio: b64FromPcm16(samples)}));
  }
}

async function start() {
  $('start').disabled = true;
  setStatus('starting');
  try {
    ctx = new AudioContext({sampleRate: RATE, latencyHint: 'interactive'});
    await ctx.audioWorklet.addModule('/static/capture-worklet.js');
    stream = await navigator.mediaDevices.getUserMedia({audio: {
      echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1}});
  } catch (err) {
    setStatus('no microphone: ' + err.message);
    state.errors.push({message: String(err)});
    $('start').disabled = false;
    return;
  }
  const src = ctx.createMediaStreamSource(stream);
  micNode = new AudioWorkletNode(ctx, 'capture');
  const mute = ctx.createGain();
  mute.gain.value = 0;
  src.connect(micNode).connect(mute).connect(ctx.destination);
  const token = new URLSearchParams(location.search).get('token');
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/realtime` +
    (token ? `?token=${encodeURIComponent(token)}` : '');
  ws = new WebSocket(url);
  ws.onopen = () => {
    setStatus('connected');
    micNode.port.onmessage = (e) => {
      if (captureStart === null) captureStart = e.data.frame;
      if (ready) sendAudio(e.data.samples); else early.push(e.data.samples);
    };
  };
  ws.onmessage = (e) => onEvent(JSON.parse(e.data));
  ws.onclose = (e) => {
    setStatus(`closed${e.reason ? ': ' + e.reason : ''}`);
    $('start').disabled = false;
    $('stop').disabled = true;
  };
  $('stop').disabled = false;
}

function stop() {
  if (ws) ws.close();
  if (stream) stream.getTracks().forEach((t) => t.stop());
  flushPlayback();
  if (ctx) ctx.close();
  ws = ctx = stream = null;
  captureStart = null;
  ready = false;
  early.length = 0;
}

$('start').onclick = start;
$('stop').onclick = stop;
$('legend').innerHTML = PHASES.map(([n, c]) => `<span><i style="background:${c}"></i>${n}</span>`).join('');
