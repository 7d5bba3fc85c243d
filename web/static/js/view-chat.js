// The open conversation: header, message log, typing line and composer.

import { h, fill, icon, linkify, fmtTime, dayKey, dayLabel, avatar, fmtLastSeen, reconcile as reconcileNodes } from './dom.js';
import * as S from './store.js';
import * as C from './client.js';

const { state } = S;
const $ = (id) => document.getElementById(id);
const EMOJIS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const TICK_LABEL = { pending: 'Sending', sent: 'Sent', delivered: 'Delivered', read: 'Read' };
const narrow = window.matchMedia('(max-width: 719px)');

let current = null;          // the conversation id on screen
const nodes = new Map();     // item key → {el, sig}
const drafts = new Map();    // conversation id → unsent composer text
let mode = null;             // {kind: 'reply'|'edit', seq, draft}
let picker = 0;              // seq whose emoji picker is open
let focusPicker = 0;         // seq whose just-opened picker takes the focus
let confirmDelete = 0;       // seq whose delete awaits confirmation
let confirmTimer = 0;
let stick = true;            // keep the log scrolled to the newest message
let newestSeq = 0;
let notify = () => {};

export function initChat({ onBack, onMembers, onNotice }) {
  notify = onNotice;
  $('back').append(icon('back'));
  $('back').addEventListener('click', onBack);
  $('send').append(icon('send'));
  $('compose-cancel').append(icon('close'));
  $('compose-cancel').addEventListener('click', () => { cancelMode(); composer().focus(); });
  $('members-open').addEventListener('click', onMembers);
  $('composer-form').addEventListener('submit', (e) => { e.preventDefault(); submit(); });
  const ta = composer();
  ta.addEventListener('keydown', onKey);
  ta.addEventListener('input', () => {
    autoGrow();
    if (!mode || mode.kind !== 'edit') C.userTyping(current, ta.value);
  });
  ta.addEventListener('blur', () => C.stopTyping());
  const box = $('messages');
  box.addEventListener('scroll', () => {
    stick = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    if (stick) $('jump').hidden = true;
    if (box.scrollTop < 300 && current) C.loadOlder(current);
  }, { passive: true });
  box.addEventListener('keydown', onLogKey);
  $('jump').addEventListener('click', () => { stick = true; scrollToBottom(); $('jump').hidden = true; });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && picker) { picker = 0; S.changed(); }
  });
}

const composer = () => $('composer');

function autoGrow() {
  const ta = composer();
  ta.style.height = 'auto';
  ta.style.height = Math.min(ta.scrollHeight, 160) + 'px';
}

function scrollToBottom() {
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
}

function onKey(e) {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    submit();
  } else if (e.key === 'Escape' && mode) {
    e.preventDefault();
    cancelMode();
  } else if (e.key === 'ArrowUp' && !composer().value && !mode) {
    const tl = state.timelines.get(current);
    const last = tl && [...tl.msgs.values()].filter((m) => m.kind === 'text' && m.sender_id === state.me.id && !m.deleted).sort((a, b) => b.seq - a.seq)[0];
    if (last) { e.preventDefault(); startEdit(last); }
  }
}

// The log is one tab stop: from it, or from a message, the arrow keys and Home/End move the
// focus between messages (each focusable with tabindex -1). A focused message shows its
// actions, which Tab reaches next; Escape goes back to the composer.
function onLogKey(e) {
  if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
  const items = [...$('msg-list').querySelectorAll('[data-testid="msg"]')];
  const at = items.indexOf(e.target);
  if (e.key === 'Escape') {
    if (!picker && e.target.closest('[data-testid="msg"]')) { e.preventDefault(); composer().focus(); }
    return;
  }
  if (!items.length || (at < 0 && e.target !== e.currentTarget)) return; // keys inside a control are its own
  const last = items.length - 1;
  const next = { ArrowUp: at < 0 ? last : at - 1, ArrowDown: at < 0 ? last : at + 1, Home: 0, End: last }[e.key];
  if (next === undefined) return;
  e.preventDefault();
  items[Math.max(0, Math.min(last, next))].focus();
}

function submit() {
  const cid = current;
  const ta = composer();
  const body = ta.value.trim();
  if (mode?.kind === 'edit') {
    if (!body) { notify('A message can’t be empty. Delete it instead.'); return; }
    const t = state.timelines.get(cid)?.msgs.get(mode.seq);
    if (t && !t.deleted && t.body !== body) C.edit(cid, mode.seq, body);
    ta.value = mode.draft;
    mode = null;
  } else {
    if (!body) return;
    C.send(cid, body, mode?.kind === 'reply' ? mode.seq : 0);
    ta.value = '';
    mode = null;
    stick = true;
  }
  drafts.delete(cid);
  autoGrow();
  renderContext();
  S.changed();
}

function startReply(m) {
  if (mode?.kind === 'edit') cancelMode();
  mode = { kind: 'reply', seq: m.seq };
  renderContext();
  composer().focus();
}

function startEdit(m) {
  const ta = composer();
  mode = { kind: 'edit', seq: m.seq, draft: mode?.kind === 'edit' ? mode.draft : ta.value };
  C.stopTyping();
  ta.value = m.body || '';
  autoGrow();
  renderContext();
  ta.focus();
  ta.setSelectionRange(ta.value.length, ta.value.length);
}

function cancelMode() {
  if (mode?.kind === 'edit') { composer().value = mode.draft; autoGrow(); }
  mode = null;
  renderContext();
}

function renderContext() {
  const box = $('compose-context');
  const text = $('compose-context-text');
  if (!mode) { box.hidden = true; text.replaceChildren(); return; }
  box.hidden = false;
  if (mode.kind === 'edit') {
    text.replaceChildren(h('strong', null, 'Editing message'), h('span', { class: 'muted' }, ' · Esc to cancel'));
    $('compose-cancel').setAttribute('aria-label', 'Cancel editing');
  } else {
    const q = quoteOf(current, state.timelines.get(current), mode.seq);
    text.replaceChildren(h('strong', null, `Replying to ${q.name}`), h('span', { class: 'snippet' }, q.text));
    $('compose-cancel').setAttribute('aria-label', 'Cancel reply');
  }
}

function switchTo(cid) {
  if (current) drafts.set(current, mode?.kind === 'edit' ? mode.draft : composer().value);
  C.stopTyping();
  current = cid;
  nodes.clear();
  $('msg-list').replaceChildren();
  $('jump').hidden = true;
  mode = null;
  picker = confirmDelete = focusPicker = 0;
  newestSeq = 0;
  stick = true;
  if (cid) {
    composer().value = drafts.get(cid) || '';
    autoGrow();
    renderContext();
    if (!narrow.matches) composer().focus({ preventScroll: true });
  }
}

// resetChat forgets everything of the last user (drafts included) on logout.
export function resetChat() {
  switchTo(null);
  drafts.clear();
}

export function renderChat() {
  const cid = state.openId;
  const conv = cid && state.convs.get(cid);
  $('chat-placeholder').hidden = !!conv;
  $('chat-inner').hidden = !conv;
  if ((conv ? cid : null) !== current) switchTo(conv ? cid : null);
  if (!conv) return;
  renderHead(conv);
  renderMessages(conv);
  renderTyping(conv);
}

function renderHead(conv) {
  const name = S.convName(conv);
  $('chat-title').textContent = name;
  const av = $('chat-avatar');
  const key = (S.partnerId(conv) || conv.id) + '|' + name;
  if (av.dataset.key !== key) { av.dataset.key = key; av.replaceChildren(avatar(S.partnerId(conv) || conv.id, name)); }
  let sub;
  if (conv.type === 'direct') {
    const p = state.presence.get(S.partnerId(conv));
    sub = !p ? '' : p.status === 'online' ? 'online' : fmtLastSeen(p.last_seen_ts);
  } else {
    const others = conv.members.filter((m) => m.user_id !== state.me.id).map((m) => S.userName(m.user_id));
    sub = others.length > 4 ? `${others.length + 1} members` : [...others, 'You'].join(', ');
  }
  $('chat-sub').textContent = sub;
  const mb = $('members-open');
  mb.hidden = conv.type !== 'group';
  mb.setAttribute('aria-expanded', String(!$('members-panel').hidden));
}

function renderTyping(conv) {
  const names = S.typingIds(conv.id).map((id) => S.userName(id));
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  const el = $('typing');
  if (el.textContent !== text) el.textContent = text;
}

function renderMessages(conv) {
  const tl = state.timelines.get(conv.id);
  const box = $('messages');
  const list = $('msg-list');
  const status = $('history-status');
  status.replaceChildren();
  if (!tl || tl.status === 'loading' || tl.status === 'idle') status.textContent = 'Loading messages…';
  else if (tl.status === 'error') {
    status.append(`Couldn’t load messages: ${tl.error} `,
      h('button', { type: 'button', class: 'link-button', onclick: () => C.openConversation(conv.id) }, 'Try again'));
  } else if (tl.loadingOlder) status.textContent = 'Loading older messages…';
  else if (!tl.hasOlder) status.textContent = conv.type === 'group' ? 'This is the beginning of the group.' : 'This is the beginning of your conversation.';

  // Keep what the reader looks at in place when items are added above it. A day separator
  // cannot be the anchor: an older page of the same day moves it up.
  let anchor = null;
  let anchorTop = 0;
  if (!stick) {
    const top = box.getBoundingClientRect().top;
    for (const el of list.children) {
      if (el.classList.contains('day')) continue;
      const r = el.getBoundingClientRect();
      if (r.bottom > top) { anchor = el; anchorTop = r.top; break; }
    }
  }
  const items = tl && tl.status === 'ready' ? buildItems(conv, tl) : [];
  reconcile(list, items);
  if (focusPicker) {
    list.querySelector(`[data-seq="${focusPicker}"] [data-testid="react-option"]`)?.focus({ preventScroll: true });
    focusPicker = 0;
  }
  if (stick) scrollToBottom();
  else if (anchor && anchor.isConnected) box.scrollTop += anchor.getBoundingClientRect().top - anchorTop;

  let last = 0;
  if (tl?.status === 'ready') for (const seq of tl.msgs.keys()) last = Math.max(last, seq);
  if (last > newestSeq) {
    if (newestSeq && !stick) $('jump').hidden = false;
    newestSeq = last;
  }
  // A first page that does not fill the screen cannot be scrolled up: fetch more now.
  if (tl?.status === 'ready' && tl.hasOlder && box.clientHeight && box.scrollHeight <= box.clientHeight + 40) C.loadOlder(conv.id);
}

// reconcile is dom.js's, with the message log's focus rules: a rebuilt message keeps the
// focused control (keepFocus), and a pending message that was stored hands the focus to its
// stored self.
function reconcile(parent, items) {
  reconcileNodes(parent, nodes, items, {
    fill(it, el) {
      const had = focusedIn(el);
      it.fill(el);
      if (had) keepFocus(el, had);
    },
    lostFocus(n) {
      (parent.querySelector(`[data-id="${CSS.escape(n.el.dataset.id || '')}"]`) || $('messages')).focus({ preventScroll: true });
    },
  });
}

// Controls that take the focus when the focused one goes away in a rebuild.
const FOCUS_NEXT = { 'msg-delete': 'msg-delete-confirm', 'msg-delete-confirm': 'msg-delete', 'react-option': 'msg-react' };

// focusedIn describes the control inside el that has the focus, if any.
function focusedIn(el) {
  const a = document.activeElement;
  if (!a || a === el || !el.contains(a)) return null;
  return { testid: a.dataset.testid, emoji: a.dataset.emoji };
}

// keepFocus puts the focus back after el was rebuilt: on the same control, else on the one
// that replaced it (Delete and its confirmation, a picked emoji and React), else on el. The
// message takes it first: its actions are displayed only while the focus is within.
function keepFocus(el, had) {
  const find = (testid, emoji) => testid && el.querySelector(`[data-testid="${testid}"]${emoji ? `[data-emoji="${CSS.escape(emoji)}"]` : ''}`);
  el.focus({ preventScroll: true });
  (find(had.testid, had.emoji) || find(FOCUS_NEXT[had.testid]))?.focus({ preventScroll: true });
}

function buildItems(conv, tl) {
  const me = state.me.id;
  const out = [];
  const msgs = [...tl.msgs.values()].sort((a, b) => a.seq - b.seq);
  const ids = new Set();
  let day = null;
  let prev = null;
  const dayItem = (ts) => {
    const k = dayKey(ts);
    if (k === day) return;
    day = k;
    prev = null;
    const label = dayLabel(ts);
    out.push({ key: 'day:' + k, sig: label, create: () => h('div', { class: 'day' }), fill: (el) => el.replaceChildren(h('span', null, label)) });
  };
  for (const m of msgs) {
    dayItem(m.ts);
    if (m.kind === 'system') {
      const text = S.systemText(m);
      out.push({
        key: 's:' + m.seq, sig: text,
        create: () => h('div', { class: 'system', 'data-testid': 'system', 'data-seq': m.seq }),
        fill: (el) => { el.textContent = text; },
      });
      prev = null;
      continue;
    }
    ids.add(m.id);
    const mine = m.sender_id === me;
    // A run is one sender's messages within 5 minutes: spaced and named once.
    const first = !prev || prev.sender_id !== m.sender_id || m.ts - prev.ts > 300000;
    const showSender = conv.type === 'group' && !mine && first;
    prev = m;
    const ctx = {
      mine, first, showSender, status: mine ? S.statusOf(conv, m.seq) : null,
      sender: showSender ? S.userName(m.sender_id) : '',
      quote: m.reply_to ? quoteOf(conv.id, tl, m.reply_to) : null,
      canDelete: mine || S.isAdmin(conv),
      picker: picker === m.seq, confirm: confirmDelete === m.seq,
    };
    out.push({
      key: 'm:' + m.seq,
      sig: JSON.stringify([m.body, m.deleted, m.edited_ts, m.reactions, ctx]),
      create: () => h('div', {
        class: 'msg ' + (mine ? 'mine' : 'theirs'), 'data-testid': 'msg', 'data-seq': m.seq,
        'data-id': m.id, 'data-mine': String(mine), tabindex: -1, onclick: toggleActive,
      }),
      fill: (el) => fillMessage(el, conv, m, ctx),
    });
  }
  for (const e of state.outbox.all()) {
    if (e.kind !== 'text' || e.conversation_id !== conv.id || ids.has(e.id)) continue;
    dayItem(e.created_ts);
    const first = !prev || prev.sender_id !== me;
    prev = { sender_id: me, ts: e.created_ts };
    const quote = e.reply_to ? quoteOf(conv.id, tl, e.reply_to) : null;
    out.push({
      key: 'p:' + e.id,
      sig: JSON.stringify([e.failed, quote, first]),
      create: () => h('div', { class: 'msg mine', 'data-testid': 'msg', 'data-id': e.id, 'data-mine': 'true', tabindex: -1 }),
      fill: (el) => fillPending(el, e, quote, first),
    });
  }
  return out;
}

// On touch screens the actions show for the message last tapped.
function toggleActive(e) {
  if (e.target.closest('button, a')) return;
  const el = e.currentTarget;
  const was = el.classList.contains('active');
  for (const other of document.querySelectorAll('.msg.active')) other.classList.remove('active');
  el.classList.toggle('active', !was);
}

function quoteOf(cid, tl, seq) {
  const t = tl && (tl.msgs.get(seq) || tl.quotes.get(seq));
  if (!t) {
    C.loadQuote(cid, seq);
    return { name: '', text: 'Loading…' };
  }
  return {
    name: S.who(t.sender_id, true),
    text: t.deleted ? 'This message was deleted' : (t.body || '').replace(/\s+/g, ' ').slice(0, 140),
  };
}

function bodyOf(m) {
  if (m.deleted) return h('p', { class: 'body deleted', 'data-testid': 'msg-body' }, 'This message was deleted');
  return h('p', { class: 'body', dir: 'auto', 'data-testid': 'msg-body' }, linkify(m.body || ''));
}

function quoteEl(q, seq) {
  return h('button', {
    type: 'button', class: 'quote', 'data-testid': 'msg-quote', 'data-reply-to': seq,
    'aria-label': `In reply to ${q.name}: ${q.text}`, onclick: () => jumpTo(seq),
  }, h('span', { class: 'quote-name' }, q.name), h('span', { class: 'quote-text' }, q.text));
}

function ticks(status) {
  return h('span', { class: 'ticks ' + status, 'data-testid': 'ticks', role: 'img', 'aria-label': TICK_LABEL[status] },
    icon(status === 'pending' ? 'clock' : status === 'sent' ? 'check' : 'checks'));
}

function timeEl(ts) {
  const d = new Date(ts);
  return h('time', { datetime: d.toISOString(), title: d.toLocaleString() }, fmtTime(ts));
}

function fillMessage(el, conv, m, ctx) {
  const cid = conv.id;
  if (ctx.mine) el.dataset.status = ctx.status;
  // Rebuilding the actions loses hover and focus; an open picker or confirmation keeps them shown.
  el.classList.toggle('menu-open', ctx.picker || ctx.confirm);
  el.classList.toggle('first', ctx.first);
  const actionButton = (name, label, testid, onclick, extra) =>
    h('button', { type: 'button', class: 'icon-button', 'aria-label': label, title: label, 'data-testid': testid, onclick, ...extra }, icon(name));
  const actions = m.deleted ? null : h('div', { class: 'actions', role: 'group', 'aria-label': 'Message actions' },
    actionButton('reply', 'Reply', 'msg-reply', () => startReply(m)),
    actionButton('smile', 'React', 'msg-react', () => {
      picker = focusPicker = picker === m.seq ? 0 : m.seq;
      S.changed();
    }, { 'aria-expanded': String(ctx.picker) }),
    ctx.mine ? actionButton('edit', 'Edit', 'msg-edit', () => startEdit(m)) : null,
    !ctx.canDelete ? null : ctx.confirm
      ? h('button', { type: 'button', class: 'confirm-delete', 'data-testid': 'msg-delete-confirm', onclick: () => { confirmDelete = 0; C.remove(cid, m.seq); S.changed(); } }, 'Delete?')
      : actionButton('trash', 'Delete', 'msg-delete', () => askDelete(m.seq)));
  const mineIn = (r) => (r.user_ids || []).includes(state.me.id);
  fill(el,
    h('div', { class: 'bubble' },
      ctx.showSender ? h('div', { class: 'sender' }, ctx.sender) : null,
      ctx.quote ? quoteEl(ctx.quote, m.reply_to) : null,
      bodyOf(m),
      h('span', { class: 'meta' },
        m.edited_ts && !m.deleted ? h('span', { class: 'edited', 'data-testid': 'msg-edited' }, 'edited') : null,
        timeEl(m.ts),
        ctx.mine ? ticks(ctx.status) : null)),
    m.reactions?.length ? h('div', { class: 'reactions' }, m.reactions.map((r) => h('button', {
      type: 'button', class: 'reaction' + (mineIn(r) ? ' on' : ''), 'data-testid': 'reaction', 'data-emoji': r.emoji,
      'aria-pressed': String(mineIn(r)), title: (r.user_ids || []).map((id) => S.who(id, true)).join(', '),
      onclick: () => C.react(cid, m.seq, r.emoji, mineIn(r)),
    }, r.emoji, h('span', { class: 'count' }, String(r.count))))) : null,
    actions,
    ctx.picker ? h('div', { class: 'picker', role: 'group', 'aria-label': 'Pick a reaction' }, EMOJIS.map((emoji) => h('button', {
      type: 'button', 'data-testid': 'react-option', 'data-emoji': emoji, 'aria-label': `React with ${emoji}`,
      onclick: () => {
        const r = m.reactions?.find((x) => x.emoji === emoji);
        C.react(cid, m.seq, emoji, !!r && mineIn(r));
        picker = 0;
        S.changed();
      },
    }, emoji))) : null,
  );
}

function fillPending(el, e, quote, first) {
  el.dataset.status = e.failed ? 'failed' : 'pending';
  el.classList.toggle('failed', !!e.failed);
  el.classList.toggle('first', first);
  fill(el,
    h('div', { class: 'bubble' },
      quote ? quoteEl(quote, e.reply_to) : null,
      bodyOf(e),
      h('span', { class: 'meta' }, timeEl(e.created_ts), e.failed ? null : ticks('pending'))),
    e.failed ? h('div', { class: 'failed-row', role: 'alert' },
      h('span', null, `Not sent: ${e.failed.message}`),
      h('button', { type: 'button', class: 'link-button', 'data-testid': 'msg-retry', onclick: () => C.retrySend(e.id) }, 'Retry'),
      h('button', { type: 'button', class: 'link-button', 'data-testid': 'msg-discard', onclick: () => C.discardSend(e.id) }, 'Discard')) : null,
  );
}

function askDelete(seq) {
  confirmDelete = seq;
  clearTimeout(confirmTimer);
  confirmTimer = setTimeout(() => { confirmDelete = 0; S.changed(); }, 4000);
  S.changed();
}

function jumpTo(seq) {
  const el = $('msg-list').querySelector(`[data-seq="${Number(seq)}"]`);
  if (!el) { notify('That message is further back; scroll up to load it.'); return; }
  el.scrollIntoView({ block: 'center', behavior: 'smooth' });
  el.focus({ preventScroll: true }); // a keyboard user goes on from the quoted message
  el.classList.remove('flash');
  void el.offsetWidth; // restart the highlight animation
  el.classList.add('flash');
}
