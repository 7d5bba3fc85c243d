// The chat client: connects the socket, keeps the store in step with the server (sync, gap
// fills, catch-up after reconnects), sends through the outbox, and sends receipts and typing.

import { api, ApiError } from './api.js';
import { Socket } from './socket.js';
import { Outbox, frameOf } from './outbox.js';
import { uuid } from './dom.js';
import * as S from './store.js';

const { state } = S;
const PAGE = 50;
const RETRYABLE = new Set(['rate_limited', 'unavailable']);

let socket = null;
let inflight = new Map();    // outbox id → entry, sent on the current connection
let syncChain = Promise.resolve();
let outboxRetry = 0;
let foreignFlush = 0;
let notify = () => {};       // shows a message to the user (toast)
const waiting = new Map();   // conversation id → live events held while the conversation is fetched
const receipts = { delivered: new Map(), read: new Map() }; // queued, conversation id → seq
const sentReceipts = { delivered: new Map(), read: new Map() };
let receiptTimer = 0;
let typing = { cid: null, at: 0 };
const presenceAsked = new Set(); // partners whose presence was fetched (then kept by frames)
// gen changes at every start and stop, so that an answer to a request made for an earlier
// session (before a logout) is dropped instead of landing in the new one.
let gen = 0;

export function start(me, { onNotice }) {
  notify = onNotice;
  gen++;
  S.reset(me);
  state.outbox = new Outbox(me.id);
  state.outbox.onChange = onForeignOutbox;
  inflight = new Map();
  socket = new Socket({ ticket: api.ticket, onFrame, onState });
  socket.start();
  document.addEventListener('visibilitychange', onAttention);
  window.addEventListener('focus', onAttention);
  runSync();
  S.changed();
}

export function stop() {
  gen++;
  presenceAsked.clear();
  socket?.stop();
  socket = null;
  state.outbox?.close();
  clearTimeout(receiptTimer);
  clearTimeout(outboxRetry);
  clearTimeout(foreignFlush);
  receiptTimer = outboxRetry = foreignFlush = 0;
  for (const m of [receipts.delivered, receipts.read, sentReceipts.delivered, sentReceipts.read, waiting]) m.clear();
  document.removeEventListener('visibilitychange', onAttention);
  window.removeEventListener('focus', onAttention);
}

export function retryConnection() { socket?.retryNow(); }

function onState(st, info) {
  state.conn = { state: st, retryAt: info.retryAt || 0 };
  if (st !== 'open') inflight.clear();
  S.changed();
}

function onFrame(f) {
  switch (f.type) {
    case 'ready':
      inflight.clear();
      flushOutbox();
      resendReceipts();
      flushReceipts();
      runSync();
      break;
    case 'message': onMessage(f); break;
    case 'ack': onAck(f); break;
    case 'error': onError(f); break;
    case 'receipt': S.applyReceipt(f); break;
    case 'typing':
      if (f.user_id !== state.me.id) S.setTyping(f.conversation_id, f.user_id, f.state === 'start');
      break;
    case 'presence':
      state.presence.set(f.user_id, { status: f.status, last_seen_ts: f.last_seen_ts });
      S.changed();
      break;
  }
}

// ---- sync and catch-up

// runSync runs syncs one after another, so that each starts from the token the last returned.
function runSync() {
  syncChain = syncChain.then(doSync, doSync);
  return syncChain;
}

async function doSync() {
  const g = gen;
  const first = state.syncToken == null;
  let res;
  try {
    res = await api.sync(state.syncToken);
  } catch (e) {
    if (g !== gen) return;
    if (state.listStatus !== 'ready') { state.listStatus = 'error'; state.listError = e.message; S.changed(); }
    return; // the next ready syncs again
  }
  if (g !== gen) return;
  if (!first) presenceAsked.clear(); // presence frames were missed while disconnected
  for (const c of res.conversations) {
    const conv = S.mergeConv(c);
    // The list has been told of these events, so they reached this device.
    if (conv.last_seq > (conv.last_delivered_seq || 0)) queueReceipt('delivered', conv.id, conv.last_seq);
  }
  // Conversations left or removed from while this device was away.
  for (const cid of res.removed_conversation_ids || []) {
    const conv = state.convs.get(cid);
    if (conv) leftConv(cid, `You are no longer a member of “${S.convName(conv)}”.`);
  }
  state.syncToken = res.next_since;
  state.listStatus = 'ready';
  if (first) {
    // A failed send to a conversation we have since left can never be retried.
    for (const e of [...state.outbox.all()]) if (e.failed && !state.convs.has(e.conversation_id)) state.outbox.remove(e.id);
  }
  fetchPresence();
  S.changed();
  for (const [cid, tl] of state.timelines) {
    if (tl.status !== 'ready') continue;
    // Other members' receipts missed while offline do not mark a conversation as changed for
    // us, so a loaded conversation is fetched again for its members' cursors.
    if (!first) refreshConv(cid);
    const conv = state.convs.get(cid);
    if (conv && (conv.last_seq > tl.held || tl.buffer.size)) fill(cid);
  }
  const open = state.openId && state.timelines.get(state.openId);
  if (open && open.status === 'error') openConversation(state.openId); // it failed while offline
  else if (state.openId) markRead(state.openId);
}

function fetchPresence() {
  const ids = [];
  for (const c of state.convs.values()) {
    const p = S.partnerId(c);
    if (p && !presenceAsked.has(p)) { presenceAsked.add(p); ids.push(p); }
  }
  for (let i = 0; i < ids.length; i += 200) {
    const chunk = ids.slice(i, i + 200);
    api.presence(chunk).then((r) => {
      for (const p of r.presence) state.presence.set(p.user_id, { status: p.status, last_seen_ts: p.last_seen_ts });
      S.changed();
    }).catch(() => { for (const id of chunk) presenceAsked.delete(id); });
  }
}

// refreshConv fetches a conversation again (members, name, cursors); a 404 means we are no
// longer a member.
async function refreshConv(cid) {
  const g = gen;
  try {
    const { conversation } = await api.conversation(cid);
    if (g !== gen) return;
    S.mergeConv(conversation);
    fetchPresence();
  } catch (e) {
    if (g === gen && e.status === 404) leftConv(cid);
  }
  S.changed();
}

function leftConv(cid, message) {
  if (!state.convs.has(cid)) return;
  if (message) notify(message);
  S.dropConv(cid);
  for (const m of [receipts.delivered, receipts.read, sentReceipts.delivered, sentReceipts.read]) m.delete(cid);
  if (state.openId === cid) state.openId = null;
  S.changed();
}

// fill fetches after=held, page by page, until the timeline has caught up with the server and
// with every buffered live event.
function fill(cid) {
  const tl = state.timelines.get(cid);
  if (!tl || tl.status !== 'ready') return Promise.resolve();
  if (tl.filling) { tl.refill = true; return tl.filling; }
  tl.filling = (async () => {
    for (let rounds = 0; rounds < 5; rounds++) {
      tl.refill = false;
      for (;;) {
        const r = await api.messages(cid, { after: tl.held, limit: 200 });
        const added = S.appendPage(tl, r.messages);
        for (const m of r.messages) afterStored(m);
        S.changed();
        if (!r.has_more || !added) break;
      }
      if (!tl.refill && !tl.buffer.size) break;
    }
  })().catch((e) => console.warn('parley: catch-up failed, retried on reconnect:', e.message))
    .finally(() => { tl.filling = null; markRead(cid); S.changed(); });
  return tl.filling;
}

// afterStored settles the outbox for a stored event of mine: another tab's send (a message
// frame) or history may bring it before (or instead of) its ack.
function afterStored(m) {
  if (m.sender_id !== state.me.id) return;
  inflight.delete(m.id);
  if (state.outbox.get(m.id)) state.outbox.remove(m.id);
}

export async function openConversation(cid) {
  if (state.openId !== cid) stopTyping();
  state.openId = cid;
  S.changed();
  if (!cid) return;
  const tl = S.timeline(cid);
  if (tl.status === 'ready') {
    const conv = state.convs.get(cid);
    if (conv && conv.last_seq > tl.held) fill(cid);
    markRead(cid);
    return;
  }
  if (tl.status === 'loading') return;
  tl.status = 'loading';
  S.changed();
  const g = gen;
  try {
    const page = await api.messages(cid, { limit: PAGE });
    if (g !== gen) return;
    S.loadNewest(tl, page);
    for (const m of page.messages) afterStored(m);
  } catch (e) {
    if (g !== gen) return;
    tl.status = 'error';
    tl.error = e.message;
    tl.buffer.clear();
    if (e.status === 404) {
      leftConv(cid, 'That conversation is no longer available to you.');
      if (state.openId === cid) state.openId = null;
    }
    S.changed();
    return;
  }
  const conv = state.convs.get(cid);
  if (tl.buffer.size || (conv && conv.last_seq > tl.held)) fill(cid);
  markRead(cid);
  S.changed();
}

export async function loadOlder(cid) {
  const tl = state.timelines.get(cid);
  if (!tl || tl.status !== 'ready' || !tl.hasOlder || tl.loadingOlder) return;
  tl.loadingOlder = true;
  S.changed();
  try {
    S.prependPage(tl, await api.messages(cid, { before: tl.minSeq, limit: PAGE }));
  } catch (e) {
    notify(`Couldn’t load older messages: ${e.message}`);
  } finally {
    tl.loadingOlder = false;
    S.changed();
  }
}

// loadQuote fetches a replied-to message that is older than the loaded pages.
const quoteFetches = new Set();
export function loadQuote(cid, seq) {
  const key = cid + ':' + seq;
  if (quoteFetches.has(key)) return;
  quoteFetches.add(key);
  api.messages(cid, { after: seq - 1, limit: 1 }).then((r) => {
    const m = r.messages[0];
    const tl = state.timelines.get(cid);
    if (m && m.seq === seq && tl) { S.setQuote(tl, m); S.changed(); }
  }).catch(() => quoteFetches.delete(key));
}

// ---- live events

async function onMessage(ev) {
  const cid = ev.conversation_id;
  if (!state.convs.has(cid) || waiting.has(cid)) {
    // A conversation we were just added to (or a direct one just started by the other side):
    // fetch it, holding its events so they are applied in order.
    if (waiting.has(cid)) { waiting.get(cid).push(ev); return; }
    waiting.set(cid, [ev]);
    const g = gen;
    await refreshConv(cid); // not (or no longer) a member: nothing to show
    if (g !== gen) return;
    const held = waiting.get(cid);
    waiting.delete(cid);
    if (state.convs.has(cid)) for (const e of held) ingest(e);
    S.changed();
    return;
  }
  ingest(ev);
}

function ingest(ev) {
  const cid = ev.conversation_id;
  const conv = state.convs.get(cid);
  if (!conv) return;
  const mine = ev.sender_id === state.me.id;
  const openVisible = cid === state.openId && attentive();
  S.noteEvent(conv, ev, !openVisible);
  if (ev.kind === 'text' && !mine) S.setTyping(cid, ev.sender_id, false);
  afterStored(ev);
  const tl = state.timelines.get(cid);
  if (tl && S.acceptLive(tl, ev) === 'gap') fill(cid);
  if (!mine) queueReceipt('delivered', cid, ev.seq);
  if (ev.kind === 'system') onSystem(conv, ev);
  if (cid === state.openId) markRead(cid);
  S.changed();
}

function onSystem(conv, ev) {
  const s = ev.system || {};
  const me = state.me.id;
  if ((s.action === 'member_removed' || s.action === 'member_left') && (s.user_ids || []).includes(me)) {
    const msg = s.action === 'member_removed' && s.actor_id !== me
      ? `${S.userName(s.actor_id)} removed you from “${S.convName(conv)}”.` : null;
    leftConv(conv.id, msg);
    return;
  }
  refreshConv(conv.id);
}

// ---- sending

function enqueue(entry) {
  state.outbox.add({ ...entry, id: uuid(), created_ts: Date.now() });
  flushOutbox();
  S.changed();
}

// flushOutbox sends, in order, every entry not yet sent on this connection and not failed.
function flushOutbox() {
  if (!socket?.isOpen()) return;
  for (const e of state.outbox.all()) {
    if (e.failed || inflight.has(e.id)) continue;
    if (!socket.send(frameOf(e))) break;
    inflight.set(e.id, e);
  }
}

// onForeignOutbox follows another tab's change to the shared outbox. That tab sends its own
// new entries, and this one gets their message frames; only an entry still waiting a while
// later (its tab may have closed) is sent from here too, under the same id, which the server
// stores once.
function onForeignOutbox() {
  S.changed();
  clearTimeout(foreignFlush);
  foreignFlush = setTimeout(flushOutbox, 5000);
}

export function send(cid, body, replyTo) {
  stopTyping();
  enqueue({ kind: 'text', conversation_id: cid, body, reply_to: replyTo || undefined });
}

export function edit(cid, seq, body) { enqueue({ kind: 'edit', conversation_id: cid, target_seq: seq, body }); }

export function remove(cid, seq) { enqueue({ kind: 'delete', conversation_id: cid, target_seq: seq }); }

export function react(cid, seq, emoji, removeIt) {
  enqueue({ kind: 'reaction', conversation_id: cid, target_seq: seq, emoji, remove: removeIt || undefined });
}

export function retrySend(id) {
  state.outbox.update(id, { failed: undefined });
  flushOutbox();
  S.changed();
}

export function discardSend(id) {
  state.outbox.remove(id);
  S.changed();
}

// onAck turns an outbox entry into the stored event it became: the connection that stored it
// gets no message frame for it. Another tab may have settled the shared entry already (on its
// own ack, or on the message frame it got for this tab's send), so the copy kept at sending
// time stands in. An ack matching neither is for an event this tab already took from a
// message frame.
function onAck(a) {
  const e = state.outbox.remove(a.id) || inflight.get(a.id);
  inflight.delete(a.id);
  if (!e) return;
  if (!state.convs.has(a.conversation_id)) { S.changed(); return; }
  ingest({
    conversation_id: a.conversation_id, seq: a.seq, id: a.id, sender_id: state.me.id, kind: e.kind,
    body: e.body, reply_to: e.reply_to, target_seq: e.target_seq, emoji: e.emoji, remove: e.remove, ts: a.ts,
  });
}

function onError(f) {
  const e = f.id && state.outbox.get(f.id);
  if (f.id) inflight.delete(f.id);
  if (!e) {
    if (f.code !== 'rate_limited') console.warn('parley:', f.code, f.message);
    return;
  }
  if (RETRYABLE.has(f.code)) {
    clearTimeout(outboxRetry);
    // The server says when (retry_after_ms); never sooner than a second, with jitter.
    const wait = Math.max(1000, f.retry_after_ms || 0);
    outboxRetry = setTimeout(flushOutbox, wait + Math.random() * 1000);
    return;
  }
  if (e.kind === 'text') {
    state.outbox.update(f.id, { failed: { code: f.code, message: f.message } });
  } else {
    state.outbox.remove(f.id);
    const what = { edit: 'edit the message', delete: 'delete the message', reaction: 'react' }[e.kind];
    notify(`Couldn’t ${what}: ${f.message}`);
  }
  S.changed();
}

// ---- receipts and typing

function attentive() {
  return document.visibilityState === 'visible' && document.hasFocus();
}

function onAttention() {
  if (state.openId) markRead(state.openId);
}

// markRead reports everything held in the open conversation as read, when someone can see it.
export function markRead(cid) {
  if (cid !== state.openId || !attentive()) return;
  const tl = state.timelines.get(cid);
  const conv = state.convs.get(cid);
  if (!tl || tl.status !== 'ready' || !conv) return;
  const seq = tl.held;
  if (seq > (conv.last_read_seq || 0)) {
    queueReceipt('read', cid, seq);
    conv.last_read_seq = seq;
    conv.last_delivered_seq = Math.max(conv.last_delivered_seq || 0, seq);
  }
  if (conv.last_read_seq >= conv.last_seq && conv.unread_count) {
    conv.unread_count = 0;
    S.changed();
  }
}

// Receipts are cumulative, so only the highest seq per conversation is sent, at most every
// 300 ms; those queued while disconnected go out after the next ready.
function queueReceipt(status, cid, seq) {
  if (seq <= (sentReceipts[status].get(cid) || 0) || seq <= (receipts[status].get(cid) || 0)) return;
  receipts[status].set(cid, seq);
  if (!receiptTimer) receiptTimer = setTimeout(flushReceipts, 300);
}

// resendReceipts queues again, after a reconnect, the latest receipts already sent: those sent
// just before a connection died were lost with it, and nothing answers a receipt. They are
// cumulative, so a repeat moves nothing.
function resendReceipts() {
  for (const status of ['read', 'delivered']) {
    for (const [cid, seq] of sentReceipts[status]) {
      if (seq > (receipts[status].get(cid) || 0)) receipts[status].set(cid, seq);
    }
    sentReceipts[status].clear();
  }
}

function flushReceipts() {
  clearTimeout(receiptTimer);
  receiptTimer = 0;
  if (!socket?.isOpen()) return;
  for (const status of ['read', 'delivered']) {
    for (const [cid, seq] of receipts[status]) {
      // A delivered the server has (from another tab or device, or a read) need not go out.
      const known = Math.max(sentReceipts.read.get(cid) || 0, state.convs.get(cid)?.last_delivered_seq || 0);
      if (status === 'delivered' && known >= seq) { receipts[status].delete(cid); continue; }
      if (!socket.send({ type: 'receipt', conversation_id: cid, status, seq })) return;
      sentReceipts[status].set(cid, seq);
      receipts[status].delete(cid);
    }
  }
}

// userTyping is called on every input: a start at most every 3 s while there is text, a stop
// once it is gone.
export function userTyping(cid, text) {
  if (!text.trim()) { stopTyping(); return; }
  if (typing.cid && typing.cid !== cid) stopTyping();
  const now = Date.now();
  if (typing.cid === cid && now - typing.at < 3000) return;
  if (socket?.send({ type: 'typing', conversation_id: cid, state: 'start' })) typing = { cid, at: now };
}

export function stopTyping() {
  if (!typing.cid) return;
  socket?.send({ type: 'typing', conversation_id: typing.cid, state: 'stop' });
  typing = { cid: null, at: 0 };
}

// ---- conversations

const USERNAME_RE = /^[a-z][a-z0-9_.-]{2,31}$/;

// findUser resolves an exact username: the prefix search answers the closest names first.
export async function findUser(name) {
  const username = name.trim().replace(/^@/, '').toLowerCase();
  if (!USERNAME_RE.test(username)) throw new ApiError(400, 'bad_request', `“${name.trim()}” is not a valid username.`);
  const { users } = await api.searchUsers(username, 10);
  const u = users.find((x) => x.username === username);
  if (!u) throw new ApiError(404, 'not_found', `There is no user named “${username}”.`);
  state.users.set(u.id, u);
  return u;
}

export async function findUsers(text) {
  const names = [...new Set(text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean))];
  const found = await Promise.allSettled(names.map(findUser));
  const missing = found.filter((r) => r.status === 'rejected');
  if (missing.length === 1) throw missing[0].reason;
  if (missing.length) {
    throw new ApiError(404, 'not_found', `These users don’t exist: ${names.filter((_, i) => found[i].status === 'rejected').join(', ')}.`);
  }
  return found.map((r) => r.value);
}

export async function startDirect(name) {
  const u = await findUser(name);
  if (u.id === state.me.id) throw new ApiError(400, 'bad_request', 'That’s you. Enter someone else’s username.');
  const { conversation } = await api.createDirect(u.id);
  S.mergeConv(conversation);
  fetchPresence();
  S.changed();
  return conversation.id;
}

export async function createGroup(name, members) {
  if (!name.trim()) throw new ApiError(400, 'bad_request', 'Give the group a name.');
  const users = members.trim() ? await findUsers(members) : [];
  const ids = users.map((u) => u.id).filter((id) => id !== state.me.id);
  const { conversation } = await api.createGroup(name.trim(), ids);
  S.mergeConv(conversation);
  S.changed();
  return conversation.id;
}

export async function addMembers(cid, text) {
  const users = await findUsers(text);
  const { conversation } = await api.addMembers(cid, users.map((u) => u.id));
  S.mergeConv(conversation);
  S.changed();
}

export async function removeMember(cid, userId) {
  await api.removeMember(cid, userId);
  if (userId === state.me.id) leftConv(cid);
  else await refreshConv(cid);
}

export async function renameGroup(cid, name) {
  const { conversation } = await api.renameGroup(cid, name.trim());
  S.mergeConv(conversation);
  S.changed();
}
