// ulm demo page: sends the conversation to POST /api/handoff and renders its named SSE events.
// opener → shown at once in its own colour; continuation → streamed after it; timeline → the bar
// under the reply. No build step, no dependencies.
'use strict';

const $ = (id) => document.getElementById(id);
const log = $('log');
const form = $('ask');
const question = $('question');
const history = []; // [{role, content}] sent with every request: the conversation so far
const SETTINGS = ['words', 'cloud-url', 'provider', 'cloud-model', 'max-tokens', 'wps', 'api-key'];

// ---- Settings (kept in localStorage) ------------------------------------------------------------

function loadSettings() {
  for (const id of SETTINGS) {
    const v = localStorage.getItem('ulm.' + id);
    if (v !== null) $(id).value = v;
  }
  $('words-out').textContent = $('words').value;
}

function saveSettings() {
  for (const id of SETTINGS) localStorage.setItem('ulm.' + id, $(id).value);
  $('words-out').textContent = $('words').value;
}

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = $('api-key').value.trim();
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

async function loadConfig() {
  try {
    const res = await fetch('api/config');
    const c = await res.json();
    $('models').innerHTML = '';
    const edge = document.createElement('b');
    edge.className = 'edge';
    edge.textContent = c.edge_model;
    const cloud = document.createElement('b');
    cloud.className = 'cloud';
    cloud.textContent = c.cloud_model;
    $('models').append('edge ', edge, ' → cloud ', cloud);
    if (c.latency && c.latency.ttft_ms) $('models').append(` (+${c.latency.ttft_ms} ms)`);
    $('cloud-url').placeholder = c.cloud_url || '';
    $('cloud-model').placeholder = c.cloud_model || 'default';
    if (localStorage.getItem('ulm.words') === null && c.words) $('words').value = Math.min(8, Math.max(4, c.words));
    $('key-row').hidden = !c.auth;
    if (!c.cloud_override) $('cloud-url').disabled = true;
    if (c.cloud_override_hosts === 'loopback') $('cloud-url').title = 'this server accepts only a cloud on its own machine (127.0.0.1, ::1, localhost)';
    $('words-out').textContent = $('words').value;
  } catch (e) {
    $('models').textContent = 'server unreachable';
  }
}

// ---- Messages -----------------------------------------------------------------------------------

function addUser(text) {
  const el = document.createElement('article');
  el.className = 'msg user';
  const p = document.createElement('p');
  p.textContent = text;
  el.append(p);
  log.append(el);
  scroll();
}

function addReply() {
  const el = $('reply-tpl').content.firstElementChild.cloneNode(true);
  log.append(el);
  scroll();
  return el;
}

function scroll() {
  log.scrollTop = log.scrollHeight;
}

// ---- The SSE stream of a fetch (EventSource cannot POST) -----------------------------------------

async function* events(response) {
  const reader = response.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) yield { name, data: JSON.parse(data.join('\n')) };
    }
  }
}

// ---- One turn -----------------------------------------------------------------------------------

async function ask(text) {
  history.push({ role: 'user', content: text });
  addUser(text);
  const el = addReply();
  const span = (c) => el.querySelector('.' + c);
  const t0 = performance.now();
  const body = { messages: history.slice(), words: Number($('words').value) };
  const cloud = {};
  if ($('cloud-url').value.trim()) cloud.base_url = $('cloud-url').value.trim();
  if ($('provider').value) cloud.provider = $('provider').value;
  if ($('cloud-model').value.trim()) cloud.model = $('cloud-model').value.trim();
  if (Object.keys(cloud).length) body.cloud = cloud;
  const maxTokens = Number($('max-tokens').value);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  body.words_per_second = Number($('wps').value) || 0;

  let shown = '';
  let errors = [];
  let reply = null;
  try {
    const res = await fetch('api/handoff', { method: 'POST', headers: headers(), body: JSON.stringify(body) });
    if (!res.ok) {
      let msg = res.status + ' ' + res.statusText;
      try { msg = (await res.json()).error.message; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    for await (const ev of events(res)) {
      const now = Math.round(performance.now() - t0);
      switch (ev.name) {
        case 'opener':
          if (!el.dataset.openerAt) el.dataset.openerAt = now;
          span('opener').textContent += ev.data.text;
          shown += ev.data.text;
          break;
        case 'continuation':
          if (!el.dataset.continuationAt) el.dataset.continuationAt = now;
          span('continuation').textContent += ev.data.text;
          shown += ev.data.text;
          break;
        case 'fallback':
          span('fallback').textContent += ev.data.text;
          shown += ev.data.text;
          break;
        case 'notice':
          span('notice').textContent += ev.data.text;
          shown += ev.data.text;
          break;
        case 'guard':
          el.dataset.guard = 'fired';
          break;
        case 'error':
          errors.push(ev.data.message || ev.data.kind);
          break;
        case 'mode':
          el.dataset.mode = ev.data.mode;
          break;
        case 'timeline':
          drawTimeline(el, ev.data, errors);
          break;
        case 'reply':
          reply = ev.data;
          break;
      }
      scroll();
    }
  } catch (e) {
    el.classList.add('error');
    errors.push(e.message);
    span('notice').textContent = (shown ? ' ' : '') + '(' + e.message + ')';
  }
  el.classList.add('done');
  history.push({ role: 'assistant', content: reply ? reply.text : shown });
  if (!shown && !reply) history.splice(-2, 2); // nothing was said: forget the turn
}

// ---- Timeline -----------------------------------------------------------------------------------

function drawTimeline(el, t, errors) {
  const box = el.querySelector('.timeline');
  const svg = box.querySelector('svg');
  const end = Math.max(t.done_ms || 0, t.first_continuation_word_ms || 0, 1);
  const x = (ms) => (1000 * ms) / end;
  const segs = [];
  const seg = (cls, a, b, title, y = 0, h = 18) => {
    if (a == null || b == null || b <= a) return;
    segs.push(`<rect class="seg seg-${cls}" x="${x(a).toFixed(1)}" y="${y}" width="${Math.max(2, x(b) - x(a)).toFixed(1)}" height="${h}"><title>${title}: ${Math.round(b - a)} ms</title></rect>`);
  };
  seg('think', 0, t.first_word_ms, 'local model, first word');
  seg('opener', t.first_word_ms, t.opener_done_ms, 'opener');
  seg('wait', t.cloud_request_ms, t.cloud_first_token_ms, 'waiting for the cloud');
  seg('cont', t.first_continuation_word_ms ?? t.cloud_first_token_ms, t.done_ms, 'continuation');
  if (t.gap_ms > 0 && t.opener_shown_ms != null) seg('gap', t.opener_shown_ms, t.opener_shown_ms + t.gap_ms, 'gap', 12, 6);
  svg.innerHTML = segs.join('');

  const ms = (v) => (v == null ? '–' : Math.round(v) + ' ms');
  const ttft = t.cloud_first_token_ms != null && t.cloud_request_ms != null ? t.cloud_first_token_ms - t.cloud_request_ms : null;
  const legend = box.querySelector('.legend');
  legend.innerHTML = '';
  const item = (cls, label, value, extra) => {
    const s = document.createElement('span');
    if (cls) {
      const k = document.createElement('i');
      k.className = 'k';
      k.style.background = `var(--${cls})`;
      s.append(k);
    }
    s.append(label + ' ');
    const b = document.createElement('b');
    b.textContent = value;
    if (extra) b.className = extra;
    s.append(b);
    legend.append(s);
  };
  item('opener', 'first word', ms(t.first_word_ms));
  item('wait', 'cloud TTFT', ms(ttft));
  item('gap', 'gap', ms(t.gap_ms), t.gap_ms > 0 ? 'gapv' : '');
  item('cloud', 'total', ms(t.done_ms));
  if (el.dataset.mode) item('', 'mode', el.dataset.mode.replace(/_/g, ' '), 'mode');
  if (errors.length) item('', 'error', errors[errors.length - 1], 'gapv');
  box.hidden = false;
  el.dataset.timeline = 'drawn';
}

// ---- Wiring -------------------------------------------------------------------------------------

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = question.value.trim();
  if (!text) return;
  question.value = '';
  $('send').disabled = true;
  try {
    await ask(text);
  } finally {
    $('send').disabled = false;
    question.focus();
  }
});

question.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    form.requestSubmit();
  }
});

$('clear').addEventListener('click', () => {
  history.length = 0;
  log.innerHTML = '';
});

$('settings-toggle').addEventListener('click', () => {
  const s = $('settings');
  s.hidden = !s.hidden;
  $('settings-toggle').setAttribute('aria-expanded', String(!s.hidden));
});

for (const id of SETTINGS) $(id).addEventListener('input', saveSettings);

loadSettings();
loadConfig();
