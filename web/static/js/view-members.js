// The members panel of a group: members with roles, add and remove (admins), rename, leave.

import { h, avatar, withBusy } from './dom.js';
import * as S from './store.js';
import * as C from './client.js';

const { state } = S;
const $ = (id) => document.getElementById(id);
let shownFor = null;  // conversation id the panel shows
let leaveArmed = false;
let leaveTimer = 0;
let sig = '';

export function initMembers() {
  $('members-close').append(h('span', { 'aria-hidden': 'true' }, '×'));
  $('members-close').addEventListener('click', () => closeMembers());
  $('add-members-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('members-add-input');
    if (!input.value.trim()) { showError('Enter one or more usernames.'); return; }
    await run(e.target.querySelector('button'), async () => {
      await C.addMembers(shownFor, input.value);
      input.value = '';
    });
  });
  $('rename-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('rename-input').value.trim();
    const conv = state.convs.get(shownFor);
    if (!name || !conv || name === conv.name) return;
    await run(e.target.querySelector('button'), () => C.renameGroup(shownFor, name));
  });
  $('members-leave').addEventListener('click', async (e) => {
    // Leaving cannot be undone by the leaver, so it takes a second click.
    if (!leaveArmed) {
      leaveArmed = true;
      e.target.textContent = 'Click again to leave';
      clearTimeout(leaveTimer);
      leaveTimer = setTimeout(() => { leaveArmed = false; e.target.textContent = 'Leave group'; }, 4000);
      return;
    }
    await run(e.target, () => C.removeMember(shownFor, state.me.id));
  });
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !$('members-panel').hidden) closeMembers(); });
}

export function toggleMembers() {
  if ($('members-panel').hidden) openMembers();
  else closeMembers();
}

function openMembers() {
  shownFor = state.openId;
  sig = '';
  showError('');
  $('members-panel').hidden = false;
  $('app').classList.add('with-members');
  const conv = state.convs.get(shownFor);
  $('rename-input').value = conv?.name || '';
  S.changed();
  $('members-close').focus();
}

export function closeMembers() {
  if ($('members-panel').hidden) return;
  $('members-panel').hidden = true;
  $('app').classList.remove('with-members');
  shownFor = null;
  clearTimeout(leaveTimer);
  leaveArmed = false;
  $('members-leave').textContent = 'Leave group';
  S.changed();
  if (!$('members-open').hidden) $('members-open').focus();
}

const run = (button, f) => withBusy(button, showError, f);

function showError(text) {
  $('members-error').textContent = text;
  $('members-error').hidden = !text;
}

export function renderMembers() {
  if ($('members-panel').hidden) return;
  const conv = state.convs.get(shownFor);
  if (!conv || shownFor !== state.openId || conv.type !== 'group') { closeMembers(); return; }
  const admin = S.isAdmin(conv);
  $('add-members-form').hidden = !admin;
  $('rename-form').hidden = !admin;
  const members = [...conv.members].sort((a, b) =>
    (a.user_id === state.me.id ? -1 : b.user_id === state.me.id ? 1 : 0) ||
    (a.role === b.role ? 0 : a.role === 'admin' ? -1 : 1) ||
    S.userName(a.user_id).localeCompare(S.userName(b.user_id)));
  const next = JSON.stringify([admin, members.map((m) => [m.user_id, m.role, S.userName(m.user_id), state.users.get(m.user_id)?.username])]);
  $('members-title').textContent = `Members (${members.length})`;
  if (next === sig) return;
  sig = next;
  $('member-list').replaceChildren(...members.map((m) => {
    const me = m.user_id === state.me.id;
    const name = S.userName(m.user_id);
    const username = me ? state.me.username : state.users.get(m.user_id)?.username;
    return h('li', { class: 'member', 'data-testid': 'member', 'data-user-id': m.user_id, 'data-role': m.role },
      avatar(m.user_id, name),
      h('span', { class: 'member-text' },
        h('span', { class: 'member-name' }, name, me ? h('span', { class: 'muted' }, ' (you)') : null),
        username ? h('span', { class: 'muted member-username' }, '@' + username) : null),
      m.role === 'admin' ? h('span', { class: 'role' }, 'Admin') : null,
      admin && !me ? h('button', {
        type: 'button', class: 'ghost small', 'data-testid': 'member-remove', 'data-user-id': m.user_id,
        'aria-label': `Remove ${name}`,
        onclick: (e) => run(e.currentTarget, () => C.removeMember(conv.id, m.user_id)),
      }, 'Remove') : null);
  }));
}
