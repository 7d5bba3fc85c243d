// The login and signup screen.

import { api, setSession } from './api.js';

const $ = (id) => document.getElementById(id);

let onLoggedIn = () => {};

export function initAuth(done) {
  onLoggedIn = done;
  $('login-form').addEventListener('submit', (e) => { e.preventDefault(); login(); });
  $('signup-form').addEventListener('submit', (e) => { e.preventDefault(); signup(); });
  document.querySelector('[data-testid="show-signup"]').addEventListener('click', () => showForm('signup'));
  document.querySelector('[data-testid="show-login"]').addEventListener('click', () => showForm('login'));
}

export function showAuth(message) {
  $('auth').hidden = false;
  showForm('login');
  setError('login', message || '');
}

function showForm(which) {
  $('login-form').hidden = which !== 'login';
  $('signup-form').hidden = which !== 'signup';
  setError('login', '');
  setError('signup', '');
  $(`${which}-username`).focus();
}

function setError(which, text) {
  const el = document.querySelector(`[data-testid="${which}-error"]`);
  el.textContent = text;
  el.hidden = !text;
}

async function busy(form, f) {
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  form.setAttribute('aria-busy', 'true');
  try { await f(); } finally {
    button.disabled = false;
    form.removeAttribute('aria-busy');
  }
}

async function login() {
  const username = $('login-username').value.trim();
  const password = $('login-password').value;
  if (!username || !password) { setError('login', 'Enter your username and password.'); return; }
  setError('login', '');
  await busy($('login-form'), async () => {
    try {
      await startSession(username, password);
      $('login-password').value = '';
    } catch (e) {
      setError('login', e.message);
    }
  });
}

async function signup() {
  const username = $('signup-username').value.trim().toLowerCase();
  const password = $('signup-password').value;
  const display = $('signup-display-name').value.trim();
  if (!/^[a-z][a-z0-9_.-]{2,31}$/.test(username)) {
    setError('signup', 'Usernames are 3–32 characters: lowercase letters, digits, _ . - and start with a letter.');
    return;
  }
  if (new TextEncoder().encode(password).length < 8) { setError('signup', 'Passwords need at least 8 characters.'); return; }
  setError('signup', '');
  await busy($('signup-form'), async () => {
    try {
      await api.signup(username, password, display);
      await startSession(username, password);
      $('signup-form').reset();
    } catch (e) {
      setError('signup', e.message);
    }
  });
}

async function startSession(username, password) {
  const tokens = await api.login(username, password);
  setSession(tokens);
  const { user } = await api.me();
  setSession({ ...tokens, user });
  $('auth').hidden = true;
  onLoggedIn(user);
}
