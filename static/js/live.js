// The live side of docs/API.md: one WebSocket per page, topics with a snapshot then consecutive diffs.
// Reconnects by itself with exponential backoff and jitter, resubscribes every topic after a reconnect,
// resubscribes a single topic when its sequence numbers show a gap (a fresh snapshot follows), and
// resubscribes with backoff a topic the server could not serve yet (error UNAVAILABLE: region recovering).

import { t } from "./i18n.js";

const BACKOFF_FIRST_MS = 400;
const BACKOFF_MAX_MS = 8000;
const PING_EVERY_MS = 20000;
// No frame at all (not even a pong) for this long means the socket is dead even if it looks open.
const SILENCE_LIMIT_MS = 45000;

export class LiveConnection {
  constructor(path = "/ws") {
    this.path = path;
    this.topics = new Map(); // topic -> {params, handler, seq}
    this.eventHandlers = new Map(); // topic -> handler, for "event" messages (topic "me")
    this.state = "connecting";
    this.stateListeners = new Set();
    this.attempt = 0;
    this.socket = null;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = Date.now();
    this.retryAt = 0;
    this.closedByUs = false;
  }

  /** Listen to connection state: "connecting" | "live" | "reconnecting" | "resyncing". */
  onState(fn) {
    this.stateListeners.add(fn);
    fn(this.state, this);
  }

  setState(state) {
    this.state = state;
    for (const fn of this.stateListeners) fn(state, this);
  }

  /**
   * Subscribe to a topic. handler(message) gets every snapshot and diff in order; a snapshot replaces
   * everything the handler knew. Calling again with the same topic replaces params and handler.
   */
  subscribe(topic, params, handler, { sequenced = true } = {}) {
    clearTimeout(this.topics.get(topic)?.retryTimer);
    this.topics.set(topic, { params, handler, seq: null, sequenced });
    this.send({ op: "subscribe", topic, ...params });
  }

  unsubscribe(topic) {
    const sub = this.topics.get(topic);
    if (!sub) return;
    clearTimeout(sub.retryTimer);
    this.topics.delete(topic);
    this.send({ op: "unsubscribe", topic });
  }

  /** Handle "event" messages (e.g. topic "me": booking_confirmed, offer). */
  onEvent(topic, handler) {
    this.eventHandlers.set(topic, handler);
  }

  start() {
    this.closedByUs = false;
    this.open();
    this.pingTimer = setInterval(() => this.keepAlive(), PING_EVERY_MS / 2);
    window.addEventListener("online", () => this.retryNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.state === "reconnecting") this.retryNow();
    });
    return this;
  }

  stop() {
    this.closedByUs = true;
    clearInterval(this.pingTimer);
    clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close();
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}${this.path}`);
    this.socket = socket;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    socket.addEventListener("open", () => {
      if (socket !== this.socket) return;
      this.attempt = 0;
      this.lastFrameAt = Date.now();
      for (const [topic, sub] of this.topics) {
        clearTimeout(sub.retryTimer);
        sub.seq = null;
        sub.refused = null;
        socket.send(JSON.stringify({ op: "subscribe", topic, ...sub.params }));
      }
      this.setState([...this.topics.values()].some((s) => s.sequenced) ? "resyncing" : "live");
    });
    socket.addEventListener("message", (ev) => {
      if (socket !== this.socket) return;
      this.lastFrameAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.dispatch(msg);
    });
    socket.addEventListener("close", () => {
      if (socket !== this.socket || this.closedByUs) return;
      this.scheduleRetry();
    });
    socket.addEventListener("error", () => {
      // a "close" event always follows; retry is scheduled there
    });
  }

  scheduleRetry() {
    clearTimeout(this.retryTimer);
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.setState("reconnecting");
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  /** Open a new socket now (e.g. after signing in, so the server knows who is listening). */
  reconnect() {
    const old = this.socket;
    this.socket = null;
    if (old) old.close();
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.open();
  }

  retryNow() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) return;
    clearTimeout(this.retryTimer);
    this.open();
  }

  keepAlive() {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastFrameAt > SILENCE_LIMIT_MS) {
      this.socket = null;
      socket.close();
      this.scheduleRetry();
      return;
    }
    socket.send(JSON.stringify({ op: "ping" }));
  }

  send(obj) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(obj));
    // otherwise the "open" handler subscribes every known topic
  }

  resubscribe(topic, sub) {
    sub.seq = null;
    this.setState("resyncing");
    this.send({ op: "subscribe", topic, ...sub.params });
  }

  /** Are all sequenced topics served (or refused for good)? Then the page is live. */
  settle() {
    if ([...this.topics.values()].every((s) => !s.sequenced || s.seq !== null || s.refused)) {
      this.setState("live");
    }
  }

  /** An error frame about one of our topics: ask again later for what may pass, give up on the rest. */
  onError(msg) {
    const topic = msg.topic;
    const sub = topic ? this.topics.get(topic) : null;
    if (!sub || sub.seq !== null) return;
    if (msg.code !== "UNAVAILABLE") {
      sub.refused = msg.code; // NOT_FOUND, INVALID, LIMIT_REACHED: asking again will not help
      this.settle();
      return;
    }
    clearTimeout(sub.retryTimer);
    const attempt = sub.attempt || 0;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    sub.attempt = attempt + 1;
    sub.retryTimer = setTimeout(() => {
      if (this.topics.get(topic) === sub && sub.seq === null) this.send({ op: "subscribe", topic, ...sub.params });
    }, delay);
  }

  dispatch(msg) {
    if (msg.type === "error") {
      this.onError(msg);
      return;
    }
    if (msg.type === "event") {
      const handler = this.eventHandlers.get(msg.topic || "me");
      if (handler) handler(msg);
      return;
    }
    if (msg.type !== "snapshot" && msg.type !== "diff") return;
    const sub = this.topics.get(msg.topic);
    if (!sub) return;
    if (msg.type === "snapshot") {
      clearTimeout(sub.retryTimer);
      sub.attempt = 0;
      sub.seq = msg.seq;
      sub.handler(msg);
      this.settle();
      return;
    }
    if (sub.seq === null) return; // waiting for the snapshot we asked for
    if (msg.seq <= sub.seq) return; // already covered by the snapshot
    if (msg.seq !== sub.seq + 1) {
      this.resubscribe(msg.topic, sub);
      return;
    }
    sub.seq = msg.seq;
    sub.handler(msg);
  }
}

/** Show a connection's state in an element (role="status" so screen readers hear changes). */
export function bindStatus(connection, element) {
  let countdown = null;
  connection.onState((state, conn) => {
    clearInterval(countdown);
    element.dataset.state = state;
    const render = () => {
      if (state === "reconnecting") {
        const s = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
        element.textContent = t("conn.reconnecting", { s });
      } else {
        element.textContent = t(`conn.${state}`);
      }
    };
    render();
    if (state === "reconnecting") countdown = setInterval(render, 1000);
  });
}
