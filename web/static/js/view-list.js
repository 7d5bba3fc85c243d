// The sidebar: who I am, starting conversations, search, and the conversation list.

import { h, avatar, fmtListTime, withBusy, reconcile } from './dom.js';
import * as S from './store.js';
import * as C from './client.js';

const { state } = S;
const $ = (id) => document.getElementById(id);
const items = new Map(); // conversation id → {el, sig}, for reconcile
let query = '';
let navigate = () => {};

export function initList(open) {
  navigate = open;
  $('search').addEventListener('input', (e) => { query = e.target.value.trim().toLowerCase(); renderList(); });
  $('new-direct').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('new-direct-input');
    if (!input.value.trim()) { showError('Enter a username to start a chat.'); input.focus(); return; }
    await withForm(e.target, async () => {
      const id = await C.startDirect(input.value);
      input.value = '';
      navigate(id);
    });
  });
  $('new-group-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    await withForm(e.target, async () => {
      const id = await C.createGroup($('new-group-name').value, $('new-group-members').value);
      e.target.reset();
      $('new-group').open = false;
      navigate(id);
    });
  });
}

export function resetList() {
  items.clear();
  $('conv-list').replaceChildren();
  $('search').value = '';
  query = '';
  showError('');
}

const withForm = (form, f) => withBusy(form.querySelector('button[type="submit"]'), showError, f);

function showError(text) {
  const el = $('new-chat-error');
  el.textContent = text;
  el.hidden = !text;
}

export function renderList() {
  const me = state.me;
  const meEl = $('me');
  const meSig = me.display_name + '|' + me.username;
  if (meEl.dataset.sig !== meSig) {
    meEl.dataset.sig = meSig;
    meEl.replaceChildren(
      avatar(me.id, me.display_name || me.username),
      h('span', { class: 'me-text' },
        h('span', { class: 'me-name' }, me.display_name || me.username),
        h('span', { class: 'me-username muted' }, '@' + me.username)),
    );
  }

  const list = $('conv-list');
  // Moving or rebuilding an item drops keyboard focus; it is put back at the end.
  const focused = [...items].find(([, it]) => it.el.contains(document.activeElement))?.[0];
  const convs = S.sortedConvs().filter((c) => !query || S.convName(c).toLowerCase().includes(query));
  // A conversation hidden by the search keeps its element for when it shows again.
  reconcile(list, items, convs.map((conv) => ({
    key: conv.id,
    sig: signature(conv),
    create: () => h('li'),
    fill: (li) => li.replaceChildren(item(conv)),
  })), { keep: (id) => state.convs.has(id) });
  const refocus = focused && items.get(focused);
  if (refocus && refocus.el.isConnected && !refocus.el.contains(document.activeElement)) refocus.el.firstChild.focus();

  const empty = $('conv-empty');
  let text = '';
  if (!convs.length) {
    if (state.listStatus === 'loading') text = 'Loading conversations…';
    else if (state.listStatus === 'error' && !state.convs.size) text = `Couldn’t load conversations: ${state.listError}`;
    else if (query) text = `No conversations match “${query}”.`;
    else text = 'No conversations yet. Start a chat with someone’s username above.';
  }
  empty.textContent = text;
  empty.hidden = !text;

  const unread = [...state.convs.values()].reduce((n, c) => n + (c.unread_count || 0), 0);
  document.title = unread ? `(${unread}) Parley` : 'Parley';
}

function previewText(conv) {
  const typers = S.typingIds(conv.id);
  if (typers.length) return { text: conv.type === 'group' ? `${S.userName(typers[0])} is typing…` : 'typing…', typing: true };
  const m = S.preview(conv);
  if (!m) return { text: conv.type === 'group' ? 'Group created' : 'No messages yet' };
  if (m.kind === 'system') return { text: S.systemText(m) };
  const who = m.sender_id === state.me.id ? 'You: ' : conv.type === 'group' ? S.userName(m.sender_id) + ': ' : '';
  if (m.deleted) return { text: who + 'Message deleted', muted: true };
  return { text: who + (m.body || '').replace(/\s+/g, ' ') };
}

function presenceOf(conv) {
  const p = S.partnerId(conv);
  if (!p) return null;
  return state.presence.get(p)?.status === 'online' ? 'online' : 'offline';
}

function signature(conv) {
  return JSON.stringify([
    S.convName(conv), previewText(conv), conv.unread_count, presenceOf(conv),
    fmtListTime(S.activity(conv)), state.openId === conv.id, conv.type,
  ]);
}

function item(conv) {
  const name = S.convName(conv);
  const pv = previewText(conv);
  const status = presenceOf(conv);
  const unread = conv.unread_count || 0;
  const dot = status && h('span', {
    class: `presence ${status}`, 'data-testid': 'presence', 'data-status': status,
  });
  return h('button', {
    type: 'button',
    class: 'conv-item' + (unread ? ' has-unread' : ''),
    'data-testid': 'conv-item',
    'data-conv-id': conv.id,
    'data-name': name,
    'aria-current': state.openId === conv.id ? 'true' : null,
    onclick: () => navigate(conv.id),
  },
  avatar(S.partnerId(conv) || conv.id, name, dot),
  h('span', { class: 'conv-main' },
    h('span', { class: 'conv-top' },
      h('span', { class: 'conv-name' }, name),
      status === 'online' ? h('span', { class: 'sr-only' }, ', online') : null,
      h('span', { class: 'conv-time' }, fmtListTime(S.activity(conv)))),
    h('span', { class: 'conv-bottom' },
      h('span', { class: 'conv-preview' + (pv.typing ? ' typing-preview' : '') + (pv.muted ? ' muted-preview' : '') }, pv.text),
      unread ? h('span', { class: 'unread', 'data-testid': 'unread' }, unread > 99 ? '99+' : String(unread)) : null,
      unread ? h('span', { class: 'sr-only' }, ' unread') : null)));
}
