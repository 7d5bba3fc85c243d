// DOM helpers. User data only ever reaches the page as text nodes or attribute values set here,
// never as markup.

// h builds an element: h('button', {class: 'x', onclick: f, dataset: {id}}, 'text', child).
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') for (const [dk, dv] of Object.entries(v)) { if (dv != null) el.dataset[dk] = dv; }
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

// withBusy runs f with button disabled (no double submit), clearing showError's message
// first and showing f's error through it.
export async function withBusy(button, showError, f) {
  button.disabled = true;
  showError('');
  try {
    await f();
  } catch (err) {
    showError(err.message);
  } finally {
    button.disabled = false;
  }
}

// reconcile puts the items' elements in order as parent's children, keyed: nodes (key →
// {el, sig}, kept by the caller between calls) makes each element once (it.create) and
// refills it (fill, by default it.fill(el)) only when the item's signature changed, so an
// unchanged item keeps its element, and with it its focus and scroll state. An element
// whose key is not among the items leaves parent, and leaves nodes too unless keep(key)
// says otherwise; lostFocus(node) is told when it took the keyboard focus with it.
export function reconcile(parent, nodes, items, { fill = (it, el) => it.fill(el), keep, lostFocus } = {}) {
  const present = new Set();
  let cursor = parent.firstChild;
  for (const it of items) {
    present.add(it.key);
    let n = nodes.get(it.key);
    if (!n) {
      n = { el: it.create(), sig: null };
      nodes.set(it.key, n);
    }
    if (n.sig !== it.sig) {
      n.sig = it.sig;
      fill(it, n.el);
    }
    if (n.el === cursor) cursor = cursor.nextSibling;
    else parent.insertBefore(n.el, cursor);
  }
  for (const [key, n] of nodes) {
    if (present.has(key)) continue;
    const had = n.el.contains(document.activeElement);
    n.el.remove();
    if (!keep?.(key)) nodes.delete(key);
    if (had) lostFocus?.(n);
  }
}

// fill replaces el's children; like h, it skips null and false children.
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// Candidate URLs; only those that parse as http: or https: become links.
const URL_RE = /\bhttps?:\/\/[^\s<>"]+/gi;

// Explicit bidi embeddings, overrides and isolates (U+202A–U+202E, U+2066–U+2069).
const BIDI_RE = /[\u202A-\u202E\u2066-\u2069]/;

// plain returns text as nodes. Text with bidi controls is cut at each control (which is
// dropped) and every piece isolated in its own <bdi>: an override cannot reach past its
// piece, so "invoice\u202Efdp.exe" reads as written, not as "invoiceexe.pdf".
function plain(text) {
  if (!BIDI_RE.test(text)) return [document.createTextNode(text)];
  return text.split(BIDI_RE).filter(Boolean).map((piece) => h('bdi', null, piece));
}

// linkify turns a message body into text nodes and safe links.
export function linkify(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(URL_RE)) {
    let raw = m[0];
    // Sentence punctuation after a URL is not part of it; a ")" is only when it closes a "(" inside.
    while (/[.,;:!?'\])]$/.test(raw)) {
      if (raw.endsWith(')') && count(raw, '(') >= count(raw, ')')) break;
      raw = raw.slice(0, -1);
    }
    let url;
    try { url = new URL(raw); } catch { continue; }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') continue;
    if (m.index > last) out.push(...plain(text.slice(last, m.index)));
    out.push(h('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer' }, ...plain(raw)));
    last = m.index + raw.length;
  }
  if (last < text.length) out.push(...plain(text.slice(last)));
  return out;
}

function count(s, ch) { return s.split(ch).length - 1; }

const SVG_NS = 'http://www.w3.org/2000/svg';
const PATHS = {
  check: 'M3.5 8.5l3 3 6-7',
  checks: 'M1 8.5l3 3 6-7M7.5 11l.5.5 6-7',
  clock: 'M8 1.8a6.2 6.2 0 1 0 0 12.4A6.2 6.2 0 0 0 8 1.8zM8 4.5V8l2.3 1.6',
  back: 'M10 3L5 8l5 5',
  send: 'M2 8l12-6-4.5 12-2-5z',
  users: 'M6 7.5a2.5 2.5 0 1 0 0-5 2.5 2.5 0 0 0 0 5zM1.5 14c0-2.5 2-4 4.5-4s4.5 1.5 4.5 4M11 7a2 2 0 1 0 0-4M12 10c1.6.4 2.5 1.7 2.5 4',
  reply: 'M6 4L2 8l4 4M2 8h7a5 5 0 0 1 5 5',
  smile: 'M8 1.8a6.2 6.2 0 1 0 0 12.4A6.2 6.2 0 0 0 8 1.8zM5.5 9.5c.6 1 1.5 1.5 2.5 1.5s1.9-.5 2.5-1.5M6 6.3v.2M10 6.3v.2',
  edit: 'M10.5 2.5l3 3L6 13H3v-3z',
  trash: 'M2.5 4h11M6 4V2.5h4V4M4 4l.7 9.5h6.6L12 4',
  close: 'M4 4l8 8M12 4l-8 8',
  down: 'M4 6l4 4 4-4',
};

// icon returns a decorative inline SVG (aria-hidden); the control around it carries the label.
export function icon(name, cls = 'icon') {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('class', cls);
  svg.setAttribute('aria-hidden', 'true');
  const p = document.createElementNS(SVG_NS, 'path');
  p.setAttribute('d', PATHS[name]);
  svg.append(p);
  return svg;
}

export function fmtTime(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// fmtListTime is the short time of a conversation's last activity: a time today, a weekday
// this week, a date before that.
export function fmtListTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  const now = new Date();
  if (sameDay(d, now)) return fmtTime(ts);
  if (now - d < 6 * 86400e3) return d.toLocaleDateString([], { weekday: 'short' });
  return d.toLocaleDateString([], { day: 'numeric', month: 'short', year: d.getFullYear() === now.getFullYear() ? undefined : '2-digit' });
}

export function dayKey(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
}

export function dayLabel(ts) {
  const d = new Date(ts);
  const now = new Date();
  if (sameDay(d, now)) return 'Today';
  if (sameDay(d, new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1))) return 'Yesterday';
  return d.toLocaleDateString([], {
    weekday: 'long', day: 'numeric', month: 'long',
    year: d.getFullYear() === now.getFullYear() ? undefined : 'numeric',
  });
}

export function fmtLastSeen(ts) {
  if (!ts) return 'offline';
  const min = Math.round((Date.now() - ts) / 60000);
  if (min < 1) return 'last seen just now';
  if (min < 60) return `last seen ${min} min ago`;
  if (sameDay(new Date(ts), new Date())) return `last seen today at ${fmtTime(ts)}`;
  return `last seen ${new Date(ts).toLocaleDateString([], { day: 'numeric', month: 'short' })}`;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

// avatar is a coloured disc with initials; the hue comes from the id so it is stable.
export function avatar(id, name, extra) {
  let hash = 2166136261; // FNV-1a: ids that differ in a few characters still get far-apart hues
  for (const ch of id || '') hash = Math.imul(hash ^ ch.charCodeAt(0), 16777619);
  const initials = (name || '?').trim().split(/\s+/).slice(0, 2).map((w) => [...w][0] || '').join('').toUpperCase();
  const el = h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials || '?', extra);
  el.style.setProperty('--hue', String((hash >>> 0) % 360));
  return el;
}

// uuid prefers crypto.randomUUID, which exists only in secure contexts (https, localhost).
export function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
