// Client state and the rules that change it. Nothing here talks to the socket; client.js feeds
// events in and views read state out. Every change ends with changed(), which batches one
// render per task.

import { api } from './api.js';

export const state = {
  me: null,
  convs: new Map(),     // id → conversation as the server sends it, plus cursors and lastShown
  timelines: new Map(), // id → timeline (see newTimeline), only for conversations opened
  users: new Map(),     // id → user
  presence: new Map(),  // user id → {status, last_seen_ts}
  typing: new Map(),    // conversation id → Map(user id → expiry timer)
  openId: null,
  conn: { state: 'connecting', retryAt: 0 },
  listStatus: 'loading', // 'loading' | 'ready' | 'error'
  listError: '',
  syncToken: null,
  outbox: null,
};

let renderer = () => {};
let scheduled = false;

export function onRender(f) { renderer = f; }

export function changed() {
  if (scheduled) return;
  scheduled = true;
  queueMicrotask(() => { scheduled = false; renderer(); });
}

export function reset(me) {
  for (const m of state.typing.values()) for (const t of m.values()) clearTimeout(t);
  Object.assign(state, {
    me, convs: new Map(), timelines: new Map(), users: new Map(), presence: new Map(), typing: new Map(),
    openId: null, conn: { state: 'connecting', retryAt: 0 }, listStatus: 'loading', listError: '',
    syncToken: null, outbox: null,
  });
  userFetches.clear();
  userFailures.clear();
}

// ---- users

const userFetches = new Map();
const userFailures = new Map(); // id → time of the last failed fetch, so renders do not hammer

export function ensureUser(id) {
  if (!id || state.users.has(id)) return Promise.resolve(state.users.get(id));
  if (userFetches.has(id)) return userFetches.get(id);
  if (Date.now() - (userFailures.get(id) || 0) < 10000) return Promise.resolve(null);
  const p = api.user(id)
    .then((r) => { state.users.set(id, r.user); changed(); return r.user; })
    .catch(() => { userFailures.set(id, Date.now()); return null; })
    .finally(() => userFetches.delete(id));
  userFetches.set(id, p);
  return p;
}

export function userName(id) {
  if (state.me && id === state.me.id) return state.me.display_name || state.me.username;
  const u = state.users.get(id);
  if (!u) { ensureUser(id); return 'Someone'; }
  return u.display_name || u.username;
}

// who names a user inside a sentence, "you" for the current user.
export function who(id, capital) {
  if (state.me && id === state.me.id) return capital ? 'You' : 'you';
  return userName(id);
}

export function joinNames(ids) {
  const n = (ids || []).map((id) => who(id));
  if (n.length <= 1) return n.join('');
  return n.slice(0, -1).join(', ') + ' and ' + n[n.length - 1];
}

// ---- conversations

export function partnerId(conv) {
  if (conv.type !== 'direct') return null;
  const m = conv.members.find((x) => x.user_id !== state.me.id);
  return m ? m.user_id : null;
}

export function convName(conv) {
  if (conv.type === 'direct') {
    const p = partnerId(conv);
    return p ? userName(p) : 'Only you';
  }
  return conv.name || 'Unnamed group';
}

export function activity(conv) {
  return Math.max(conv.updated_ts || 0, conv.last_message?.ts || 0, conv.lastShown?.ts || 0);
}

export function sortedConvs() {
  return [...state.convs.values()].sort((a, b) => activity(b) - activity(a) || (a.id < b.id ? 1 : -1));
}

export function myRole(conv) {
  return conv.members.find((m) => m.user_id === state.me.id)?.role;
}

// mergeConv takes a conversation from the server. Cursors only move forward, and a summary
// older than what live events already told us does not roll the list back.
export function mergeConv(c) {
  const old = state.convs.get(c.id);
  const cursors = new Map();
  for (const m of c.members || []) {
    const prev = old?.cursors.get(m.user_id);
    cursors.set(m.user_id, {
      delivered: Math.max(m.last_delivered_seq || 0, prev?.delivered || 0),
      read: Math.max(m.last_read_seq || 0, prev?.read || 0),
    });
  }
  const conv = { ...c, members: c.members || [], cursors, lastShown: old?.lastShown || null };
  if (old) {
    conv.last_read_seq = Math.max(old.last_read_seq || 0, c.last_read_seq || 0);
    conv.last_delivered_seq = Math.max(old.last_delivered_seq || 0, c.last_delivered_seq || 0);
    if (old.last_seq > c.last_seq) {
      Object.assign(conv, { last_seq: old.last_seq, last_message: old.last_message, unread_count: old.unread_count, updated_ts: old.updated_ts });
    }
    if (conv.last_read_seq >= conv.last_seq) conv.unread_count = 0;
  }
  state.convs.set(c.id, conv);
  // A direct conversation is named after the partner; group members are fetched when shown.
  const partner = partnerId(conv);
  if (partner) ensureUser(partner);
  return conv;
}

export function dropConv(id) {
  state.convs.delete(id);
  state.timelines.delete(id);
  state.typing.delete(id);
}

// noteEvent updates a conversation's summary (order, preview, unread) with an event newer than
// the summary; it answers whether the event was newer.
export function noteEvent(conv, ev, bumpUnread) {
  if (ev.seq <= (conv.last_seq || 0)) return false;
  conv.last_seq = ev.seq;
  conv.updated_ts = Math.max(conv.updated_ts || 0, ev.ts || 0);
  if (ev.kind === 'text') {
    conv.last_message = clone(ev);
    if (bumpUnread && ev.sender_id !== state.me.id) conv.unread_count = (conv.unread_count || 0) + 1;
  } else if (ev.kind === 'system') {
    conv.lastShown = clone(ev);
  } else if (conv.last_message && ev.target_seq === conv.last_message.seq) {
    applyTo(conv.last_message, ev);
  }
  return true;
}

// preview is the newest event the list can show for a conversation.
export function preview(conv) {
  const a = conv.last_message;
  const b = conv.lastShown;
  if (!a) return b;
  if (!b) return a;
  return a.seq > b.seq ? a : b;
}

// statusOf is the tick state of one of my messages: read or delivered once every other
// member's cursor has reached it.
export function statusOf(conv, seq) {
  const others = conv.members.filter((m) => m.user_id !== state.me.id);
  if (!others.length) return 'sent';
  let read = true;
  let delivered = true;
  for (const m of others) {
    const c = conv.cursors.get(m.user_id) || { delivered: 0, read: 0 };
    if (c.read < seq) read = false;
    if (Math.max(c.delivered, c.read) < seq) delivered = false;
  }
  return read ? 'read' : delivered ? 'delivered' : 'sent';
}

export function applyReceipt(f) {
  const conv = state.convs.get(f.conversation_id);
  if (!conv) return;
  if (f.user_id === state.me.id) {
    // Another device or tab of mine moved my cursor.
    if (f.status === 'read') {
      conv.last_read_seq = Math.max(conv.last_read_seq || 0, f.seq);
      if (conv.last_read_seq >= conv.last_seq) conv.unread_count = 0;
    }
    conv.last_delivered_seq = Math.max(conv.last_delivered_seq || 0, f.seq);
  } else {
    const c = conv.cursors.get(f.user_id) || { delivered: 0, read: 0 };
    c.delivered = Math.max(c.delivered, f.seq);
    if (f.status === 'read') c.read = Math.max(c.read, f.seq);
    conv.cursors.set(f.user_id, c);
  }
  changed();
}

// ---- typing

export function setTyping(cid, uid, on) {
  let m = state.typing.get(cid);
  if (!m) state.typing.set(cid, (m = new Map()));
  clearTimeout(m.get(uid));
  m.delete(uid);
  // A start not refreshed within 6 s has ended, whether or not a stop arrives.
  if (on) m.set(uid, setTimeout(() => { m.delete(uid); changed(); }, 6000));
  changed();
}

export function typingIds(cid) {
  return [...(state.typing.get(cid)?.keys() || [])];
}

// ---- timelines
//
// A timeline holds the seqs minSeq..held of a conversation with no hole: displayable events
// (text, system) in msgs, edits, deletes and reactions applied to their targets. Live events
// beyond held+1 wait in buffer until the gap is fetched.

export function timeline(cid) {
  let tl = state.timelines.get(cid);
  if (!tl) {
    tl = {
      status: 'idle', error: '', msgs: new Map(), quotes: new Map(), minSeq: 0, held: 0,
      hasOlder: false, loadingOlder: false, buffer: new Map(), filling: null,
    };
    state.timelines.set(cid, tl);
  }
  return tl;
}

// acceptLive takes a live event: 'later' if the timeline is not loaded, 'dup' if held already,
// 'gap' if seqs before it are missing, else 'applied'.
export function acceptLive(tl, ev) {
  if (tl.status !== 'ready') {
    if (tl.status === 'loading') tl.buffer.set(ev.seq, ev);
    return 'later';
  }
  if (ev.seq <= tl.held) return 'dup';
  tl.buffer.set(ev.seq, ev);
  drain(tl);
  return tl.buffer.size ? 'gap' : 'applied';
}

function drain(tl) {
  for (const s of tl.buffer.keys()) if (s <= tl.held) tl.buffer.delete(s);
  while (tl.buffer.has(tl.held + 1)) {
    const ev = tl.buffer.get(tl.held + 1);
    tl.buffer.delete(tl.held + 1);
    apply(tl, ev);
    tl.held++;
  }
}

// loadNewest installs the newest page. Edits and reactions in it are applied again although
// their targets already carry them: every rule in applyTo gives the same result when replayed
// in seq order, so snapshot and events can never disagree.
export function loadNewest(tl, page) {
  const ms = page.messages;
  tl.msgs.clear();
  for (const m of ms) apply(tl, m);
  tl.minSeq = ms.length ? ms[0].seq : 0;
  tl.held = ms.length ? ms[ms.length - 1].seq : 0;
  tl.hasOlder = page.has_more && tl.minSeq > 1;
  tl.status = 'ready';
  tl.error = '';
  drain(tl);
}

// appendPage applies a catch-up page (after=held) in order; it answers how many seqs it added.
export function appendPage(tl, ms) {
  let n = 0;
  for (const m of ms) {
    if (m.seq <= tl.held) continue;
    if (m.seq !== tl.held + 1) break;
    apply(tl, m);
    tl.held++;
    n++;
  }
  drain(tl);
  return n;
}

// prependPage adds an older page. Its originals carry their current state, and its edits and
// reactions target seqs older still, so only the originals are taken.
export function prependPage(tl, page) {
  const ms = page.messages.filter((m) => m.seq < tl.minSeq);
  for (const m of ms) {
    if (m.kind === 'text' || m.kind === 'system') {
      tl.msgs.set(m.seq, clone(m));
      tl.quotes.delete(m.seq);
    }
  }
  if (ms.length) tl.minSeq = ms[0].seq;
  tl.hasOlder = page.has_more && tl.minSeq > 1;
}

function apply(tl, ev) {
  if (ev.kind === 'text' || ev.kind === 'system') {
    tl.msgs.set(ev.seq, clone(ev));
    return;
  }
  for (const t of [tl.msgs.get(ev.target_seq), tl.quotes.get(ev.target_seq)]) if (t) applyTo(t, ev);
}

function applyTo(t, ev) {
  if (t.deleted) return;
  if (ev.kind === 'edit') {
    t.body = ev.body;
    t.edited_ts = ev.ts;
  } else if (ev.kind === 'delete') {
    t.deleted = true;
    delete t.body;
    t.reactions = [];
  } else if (ev.kind === 'reaction') {
    react(t, ev.sender_id, ev.emoji, ev.remove);
  }
}

// react keeps a reaction aggregate as sets of users per emoji, so a replayed event is a no-op.
function react(t, uid, emoji, remove) {
  const rs = (t.reactions ||= []);
  let r = rs.find((x) => x.emoji === emoji);
  if (r) r.user_ids ||= [];
  if (remove) {
    if (!r || !r.user_ids.includes(uid)) return;
    r.user_ids = r.user_ids.filter((u) => u !== uid);
    r.count = r.user_ids.length;
    if (!r.count) rs.splice(rs.indexOf(r), 1);
  } else {
    if (r && r.user_ids.includes(uid)) return;
    if (!r) rs.push((r = { emoji, count: 0, user_ids: [] }));
    r.user_ids.push(uid);
    r.count = r.user_ids.length;
  }
}

function clone(m) {
  const { type, ...rest } = m;
  return { ...rest, reactions: (m.reactions || []).map((r) => ({ ...r, user_ids: [...(r.user_ids || [])] })) };
}

export function setQuote(tl, m) {
  if (!tl.msgs.has(m.seq)) tl.quotes.set(m.seq, clone(m));
}

// ---- rendering helpers shared by the list and the chat

export function systemText(m) {
  const s = m.system || {};
  const actor = who(s.actor_id, true);
  const list = joinNames(s.user_ids);
  switch (s.action) {
    case 'created': return `${actor} created the group${s.name ? ` “${s.name}”` : ''}`;
    case 'members_added': return `${actor} added ${list}`;
    case 'member_removed': return `${actor} removed ${list}`;
    case 'member_left': return `${list ? capitalize(list) : actor} left`;
    case 'renamed': return `${actor} renamed the group to “${s.name || ''}”`;
    case 'role_changed': return `${capitalize(list)} ${(s.user_ids || []).length > 1 ? 'are' : 'is'} now ${s.role === 'admin' ? 'admin' : 'member'}`;
    default: return `${actor} changed the conversation`;
  }
}

function capitalize(s) { return s ? s[0].toUpperCase() + s.slice(1) : s; }

export function isAdmin(conv) { return conv.type === 'group' && myRole(conv) === 'admin'; }
