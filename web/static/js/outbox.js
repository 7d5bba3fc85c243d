// The outbox: every event this user sends (text, edit, delete, reaction), kept in localStorage
// until the server acknowledges it, so that what was written offline or before a reload is
// sent later under the same id (the server stores an id once, however often it is sent).
//
// Entry: {id, kind, conversation_id, body?, reply_to?, target_seq?, emoji?, remove?,
//         created_ts, failed?: {code, message}}

const FRAME_TYPE = { text: 'send', edit: 'edit', delete: 'delete', reaction: 'react' };

export class Outbox {
  constructor(userId) {
    this.key = `parley.outbox.${userId}`;
    this.list = this.load();
    // Another tab of the same user may change the outbox; its entries are ours to show too.
    this.onStorage = (e) => { if (e.key === this.key) { this.list = this.load(); this.onChange?.(); } };
    window.addEventListener('storage', this.onStorage);
  }

  close() { window.removeEventListener('storage', this.onStorage); }

  load() {
    try { return JSON.parse(localStorage.getItem(this.key)) || []; } catch { return []; }
  }

  save() {
    try {
      localStorage.setItem(this.key, JSON.stringify(this.list));
    } catch {
      // Storage full: the entries stay in memory and are still sent while this page lives.
    }
  }

  all() { return this.list; }

  get(id) { return this.list.find((e) => e.id === id); }

  add(entry) {
    this.list.push(entry);
    this.save();
  }

  update(id, patch) {
    const e = this.get(id);
    if (!e) return;
    Object.assign(e, patch);
    for (const [k, v] of Object.entries(patch)) if (v === undefined) delete e[k];
    this.save();
  }

  remove(id) {
    const i = this.list.findIndex((e) => e.id === id);
    if (i < 0) return null;
    const [e] = this.list.splice(i, 1);
    this.save();
    return e;
  }

  clear() {
    this.list = [];
    localStorage.removeItem(this.key);
  }
}

// frameOf is the WebSocket frame that sends an outbox entry.
export function frameOf(e) {
  const f = { type: FRAME_TYPE[e.kind], id: e.id, conversation_id: e.conversation_id };
  if (e.body != null) f.body = e.body;
  if (e.reply_to) f.reply_to = e.reply_to;
  if (e.target_seq) f.target_seq = e.target_seq;
  if (e.emoji) f.emoji = e.emoji;
  if (e.remove) f.remove = true;
  return f;
}
