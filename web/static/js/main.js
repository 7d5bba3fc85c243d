// Entry point: chooses between the login screen and the app, routes #/c/<id> to the open
// conversation, and renders the connection banner and notices.

import { api, getSession, setSession, clearSession, setAuthLostHandler } from './api.js';
import { h } from './dom.js';
import * as S from './store.js';
import * as C from './client.js';
import { initAuth, showAuth } from './view-auth.js';
import { initList, renderList, resetList } from './view-list.js';
import { initChat, renderChat, resetChat } from './view-chat.js';
import { initMembers, renderMembers, toggleMembers, closeMembers } from './view-members.js';

const $ = (id) => document.getElementById(id);
let running = false;
let bannerTimer = 0;
let shownView = 'list';
let lastConv = null; // the conversation last on screen, whose list item takes the focus back

function boot() {
  initAuth(startApp);
  initList(openConv);
  initChat({ onBack: back, onMembers: toggleMembers, onNotice: toast });
  initMembers();
  setAuthLostHandler((message) => { if (running) stopApp(message); });
  $('logout').addEventListener('click', logout);
  $('conn-retry').addEventListener('click', () => C.retryConnection());
  window.addEventListener('popstate', route);
  window.addEventListener('hashchange', route);
  window.addEventListener('online', render);
  window.addEventListener('offline', render);
  S.onRender(render);
  const s = getSession();
  if (s && s.user) startApp(s.user);
  else showAuth();
}

function startApp(user) {
  running = true;
  $('auth').hidden = true;
  $('app').hidden = false;
  C.start(user, { onNotice: toast });
  route();
  // The stored profile lets the app start offline; this picks up a changed display name.
  api.me().then(({ user: fresh }) => {
    if (!running) return;
    S.state.me = fresh;
    setSession({ ...getSession(), user: fresh });
    S.changed();
  }).catch(() => {});
}

function stopApp(message) {
  running = false;
  C.stop();
  closeMembers();
  resetList();
  resetChat();
  S.state.openId = null;
  history.replaceState(null, '', location.pathname + location.search);
  $('app').hidden = true;
  $('conn-banner').hidden = true;
  $('conn-status').textContent = '';
  shownView = 'list';
  lastConv = null;
  clearInterval(bannerTimer);
  showAuth(message);
}

async function logout() {
  const outbox = S.state.outbox;
  running = false;
  C.stop();
  try { await api.logout(); } catch { /* the tokens are dropped below either way */ }
  outbox?.clear();
  clearSession();
  stopApp();
}

function convFromHash() {
  const m = /^#\/c\/(.+)$/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

function openConv(id) {
  if (id === convFromHash()) { route(); return; }
  if (id) history.pushState({ parley: true }, '', '#/c/' + encodeURIComponent(id));
  else history.pushState(null, '', location.pathname + location.search);
  route();
}

// back returns to the list, through history when the list is where we came from.
function back() {
  if (history.state && history.state.parley) history.back();
  else openConv(null);
}

function route() {
  if (!running) return;
  const id = convFromHash();
  if (id !== S.state.openId) closeMembers();
  C.openConversation(id);
  render();
}

function render() {
  if (!running) return;
  // A conversation that disappeared (we left, or were removed) takes the view back to the list.
  if (!S.state.openId && convFromHash()) history.replaceState(null, '', location.pathname + location.search);
  const view = S.state.openId && S.state.convs.has(S.state.openId) ? 'chat' : 'list';
  $('app').dataset.view = view;
  renderBanner();
  renderList();
  renderChat();
  renderMembers();
  if (view !== shownView) moveFocus(view);
  shownView = view;
  if (view === 'chat') lastConv = S.state.openId;
}

// On a phone the list and the conversation take turns on screen: focus left on the one just
// hidden would drop to the page, so it moves to the start of the other (back button, or the
// list item of the conversation left).
function moveFocus(view) {
  const a = document.activeElement;
  if (a && a !== document.body && a.getClientRects().length) return; // still on screen
  const item = lastConv && document.querySelector(`[data-testid="conv-item"][data-conv-id="${CSS.escape(lastConv)}"]`);
  const to = view === 'chat' ? $('back') : item || $('search');
  if (to?.getClientRects().length) to.focus({ preventScroll: true });
}

function renderBanner() {
  const { state, retryAt } = S.state.conn;
  let text = '';
  if (!navigator.onLine || state === 'offline') text = 'You’re offline. Messages you send will go out when you reconnect.';
  else if (state === 'connecting') text = 'Connecting…';
  else if (state === 'waiting') text = `Offline — reconnecting in ${Math.max(1, Math.ceil((retryAt - Date.now()) / 1000))}s`;
  const banner = $('conn-banner');
  $('conn-text').textContent = text;
  // Screen readers hear each change once: no countdown, and retries (waiting, connecting,
  // waiting…) keep one sentence.
  const said = state === 'waiting' && navigator.onLine ? 'Connection lost. Reconnecting…' : text;
  if (state !== 'connecting' && $('conn-status').textContent !== said) $('conn-status').textContent = said;
  $('conn-retry').hidden = state !== 'waiting' || !navigator.onLine;
  banner.hidden = !text;
  banner.dataset.state = navigator.onLine ? state : 'offline';
  clearInterval(bannerTimer);
  if (state === 'waiting') bannerTimer = setInterval(renderBanner, 1000);
}

function toast(message) {
  const el = h('div', { class: 'toast' },
    h('span', null, message),
    h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Dismiss', onclick: () => el.remove() }, '×'));
  $('toasts').append(el);
  setTimeout(() => el.remove(), 6000);
}

boot();
