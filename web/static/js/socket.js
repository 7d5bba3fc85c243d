// The WebSocket connection: one-time ticket, reconnect with jittered backoff, heartbeat, goaway,
// and the browser's offline/online events.
//
// States reported to onState: 'connecting', 'open' (after ready), 'waiting' (retryAt set),
// 'offline' (the browser says there is no network), 'stopped'.

const MIN_BACKOFF = 500;
const MAX_BACKOFF = 10000;

export class Socket {
  constructor({ ticket, onFrame, onState }) {
    this.ticket = ticket;
    this.onFrame = onFrame;
    this.onState = onState;
    this.ws = null;
    this.state = 'stopped';
    this.attempts = 0;
    this.gen = 0; // bumped to abandon a connect still waiting for its ticket
    this.retryTimer = 0;
    this.beat = 0;
    this.goawayMs = null;
    this.lastRecv = 0;
    this.onOffline = () => this.drop('offline');
    this.onOnline = () => { this.attempts = 0; this.connect(); };
  }

  start() {
    window.addEventListener('offline', this.onOffline);
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  stop() {
    window.removeEventListener('offline', this.onOffline);
    window.removeEventListener('online', this.onOnline);
    this.drop('stopped');
  }

  isOpen() { return this.state === 'open'; }

  send(frame) {
    if (this.state !== 'open' || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  retryNow() {
    this.attempts = 0;
    this.connect();
  }

  setState(state, info = {}) {
    this.state = state;
    this.onState(state, info);
  }

  async connect() {
    if (this.state === 'connecting' || this.state === 'open') return;
    clearTimeout(this.retryTimer);
    if (!navigator.onLine) { this.setState('offline'); return; }
    const gen = ++this.gen;
    this.setState('connecting');
    let t;
    try {
      t = await this.ticket();
    } catch (e) {
      if (gen !== this.gen) return;
      this.state = 'closed';
      if (e.status === 401) { this.setState('stopped'); return; } // the session is gone; the app logs out
      this.scheduleRetry();
      return;
    }
    if (gen !== this.gen) return;
    const url = new URL('/api/v1/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('ticket', t.ticket);
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (e) => this.receive(e.data);
    ws.onclose = () => { if (this.ws === ws) this.closed(); };
  }

  receive(data) {
    let f;
    try { f = JSON.parse(data); } catch { return; }
    this.lastRecv = Date.now();
    if (f.type === 'ready') {
      this.attempts = 0;
      this.startHeartbeat(f.heartbeat_ms || 10000);
      this.setState('open');
    } else if (f.type === 'goaway') {
      this.goawayMs = f.reconnect_ms || 0;
    }
    this.onFrame(f);
    if (f.type === 'goaway') this.drop();
  }

  // The server pings silent connections, but a browser cannot see those: our own pings and
  // their pongs are how a dead connection is noticed (no frame for 2.5 heartbeats).
  startHeartbeat(ms) {
    clearInterval(this.beat);
    this.beat = setInterval(() => {
      if (Date.now() - this.lastRecv > ms * 2.5) { this.drop(); return; }
      this.send({ type: 'ping' });
    }, ms);
  }

  // drop closes the connection without waiting for the close handshake, which an offline
  // network would never complete, then reconnects unless told the reason not to.
  drop(reason) {
    this.gen++;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      try { ws.close(1000); } catch { /* already closed */ }
    }
    if (reason === 'stopped') {
      clearTimeout(this.retryTimer);
      clearInterval(this.beat);
      this.setState('stopped');
    } else if (reason === 'offline') {
      clearTimeout(this.retryTimer);
      clearInterval(this.beat);
      this.setState('offline');
    } else {
      this.closed();
    }
  }

  closed() {
    this.ws = null;
    clearInterval(this.beat);
    this.state = 'closed';
    if (this.goawayMs != null) {
      const ms = this.goawayMs + Math.random() * 250;
      this.goawayMs = null;
      this.wait(ms);
    } else {
      this.scheduleRetry();
    }
  }

  scheduleRetry() {
    const base = Math.min(MAX_BACKOFF, MIN_BACKOFF * 2 ** this.attempts);
    this.attempts++;
    this.wait(base / 2 + Math.random() * base / 2);
  }

  wait(ms) {
    clearTimeout(this.retryTimer);
    if (!navigator.onLine) { this.setState('offline'); return; }
    this.setState('waiting', { retryAt: Date.now() + ms });
    this.retryTimer = setTimeout(() => this.connect(), ms);
  }
}
