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
    this.saved = true; // whether the stored list holds everything in this.list
    this.list = this.load();
    // The tabs of one user share the list: each shows the others' pending entries.
    this.onStorage = (e) => {
      if (e.key !== this.key || !this.saved) return;
      this.list = this.load();
      this.onChange?.();
    };
    window.addEventListener('storage', this.onStorage);
  }

  close() { window.removeEventListener('storage', this.onStorage); }

  load() {
    try { return JSON.parse(localStorage.getItem(this.key)) || []; } catch { return []; }
  }

  save() {
    try {
      localStorage.setItem(this.key, JSON.stringify(this.list));
      this.saved = true;
    } catch {
      // Storage full: the entries stay in memory and are still sent while this page lives.
      this.saved = false;
    }
  }

  // change applies f to the stored list as it is now, not to this tab's copy, which another
  // tab's write may not have reached yet: two tabs writing at once keep each other's entries.
  change(f) {
    if (this.saved) this.list = this.load();
    const result = f(this.list);
    this.save();
    return result;
  }

  all() { return this.list; }

  get(id) { return this.list.find((e) => e.id === id); }

  add(entry) {
    this.change((list) => list.push(entry));
  }

  update(id, patch) {
    this.change((list) => {
      const e = list.find((x) => x.id === id);
      if (!e) return;
      Object.assign(e, patch);
      for (const [k, v] of Object.entries(patch)) if (v === undefined) delete e[k];
    });
  }

  remove(id) {
    return this.change((list) => {
      const i = list.findIndex((e) => e.id === id);
      return i < 0 ? null : list.splice(i, 1)[0];
    });
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
