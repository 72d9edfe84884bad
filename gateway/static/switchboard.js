/*
 * switchboard.js: the browser client for Switchboard. No dependencies, no build step.
 *
 *   <script src="/sdk/switchboard.js"></script>
 *   const auth = await Switchboard.logIn("", "alice", "wonderland");
 *   const client = new Switchboard.Client({token: auth.token});
 *   client.on("message", (m) => console.log(m.text));
 *   await client.start();
 *   await client.send(conversationId, "hi");
 *
 * It reads the user's event log over the best transport that works (WebSocket, then
 * Server-Sent Events, then long-poll, then poll), falls back on its own, remembers the
 * winner, probes for an upgrade later, resumes from its cursor on every switch and
 * reconnect, de-duplicates by event id and message id, and retries sends (same
 * client_msg_id) until they are acknowledged. docs/sdk.md describes it; the fallback
 * ideas come from Engine.IO (probe, then upgrade) and Nchan (cursor in every request).
 *
 * It uses only XMLHttpRequest for HTTP, so it runs where fetch, WebSocket and
 * EventSource are all missing (long-poll and poll then carry everything).
 */
(function (root) {
  "use strict";

  var ORDER = ["ws", "sse", "longpoll", "poll"];
  var STORAGE_KEY = "switchboard.transport";
  var CONTROL = {ready: 1, ping: 1, pong: 1, ack: 1, error: 1, close: 1};

  var DEFAULTS = {
    baseUrl: "",
    token: null,
    transport: null,        // force one of ORDER ("legacy" = longpoll without WS/SSE)
    transports: ORDER,      // the candidates, best first
    legacy: false,          // behave like a browser with neither WebSocket nor EventSource
    wsTimeout: 5000,        // ms from opening the socket to its "ready" frame
    sseReadyTimeout: 4000,  // ms to see "ready": a buffering proxy holds it back
    wsIdleTimeout: 75000,   // ms without any frame (server pings every 25 s) = dead link
    longpollWait: 25,       // s the server may hold a long-poll (its maximum is 25)
    pollInterval: 2000,     // ms between plain polls
    upgradeAfter: 30000,    // ms on a lower transport before probing a better one
    upgradeMax: 600000,     // probes back off (doubling) up to this
    backoffMin: 500,        // reconnect backoff, ms; doubles per failure, with jitter
    backoffMax: 15000,
    sendTimeout: 10000,     // ms to wait for a send's acknowledgement before retrying
    remember: true,         // keep the winning transport in localStorage
    storage: null           // defaults to window.localStorage when usable
  };

  // ---------------------------------------------------------------- small helpers

  function assign(target) {
    for (var i = 1; i < arguments.length; i++) {
      var src = arguments[i] || {};
      for (var k in src) {
        if (Object.prototype.hasOwnProperty.call(src, k) && src[k] !== undefined) target[k] = src[k];
      }
    }
    return target;
  }

  function randomId(prefix) {
    var bytes = "";
    var c = root.crypto;
    if (c && c.getRandomValues) {
      var a = new Uint8Array(12);
      c.getRandomValues(a);
      for (var i = 0; i < a.length; i++) bytes += (a[i] + 256).toString(16).slice(1);
    } else {
      for (var j = 0; j < 24; j++) bytes += Math.floor(Math.random() * 16).toString(16);
    }
    return (prefix || "c") + "-" + Date.now().toString(36) + "-" + bytes;
  }

  function query(params) {
    var parts = [];
    for (var k in params) {
      if (params[k] !== null && params[k] !== undefined && params[k] !== "") {
        parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(params[k]));
      }
    }
    return parts.length ? "?" + parts.join("&") : "";
  }

  function backoff(opts, attempt) {
    var base = Math.min(opts.backoffMax, opts.backoffMin * Math.pow(2, Math.max(0, attempt - 1)));
    return Math.round(base * (0.5 + Math.random() * 0.5));  // "equal jitter"
  }

  /** An error from the API (status, code) or the network (status 0, code network/timeout). */
  function SwitchboardError(status, code, message, body) {
    var err = new Error(message || code);
    err.name = "SwitchboardError";
    err.status = status;
    err.code = code;
    err.body = body;
    err.retryable = status === 0 || status === 408 || status === 429 || status >= 500;
    return err;
  }

  /** One HTTP request over XMLHttpRequest; resolves with the JSON body. */
  function http(method, url, opts) {
    opts = opts || {};
    return new Promise(function (resolve, reject) {
      var x = new root.XMLHttpRequest();
      x.open(method, url, true);
      x.timeout = opts.timeout || 30000;
      x.setRequestHeader("Accept", "application/json");
      if (opts.token) x.setRequestHeader("Authorization", "Bearer " + opts.token);
      if (opts.body !== undefined) x.setRequestHeader("Content-Type", "application/json");
      x.onload = function () {
        var body = null;
        try { body = x.responseText ? JSON.parse(x.responseText) : null; } catch (e) { body = null; }
        if (x.status >= 200 && x.status < 300) return resolve(body);
        var e = (body && body.error) || {};
        reject(SwitchboardError(x.status, e.code || "http_" + x.status, e.message, body));
      };
      x.onerror = function () { reject(SwitchboardError(0, "network", "network error")); };
      x.ontimeout = function () { reject(SwitchboardError(0, "timeout", "request timed out")); };
      x.onabort = function () { reject(SwitchboardError(0, "aborted", "request aborted")); };
      if (opts.handle) opts.handle.abort = function () { x.abort(); };
      x.send(opts.body !== undefined ? JSON.stringify(opts.body) : null);
    });
  }

  function Emitter() { this._handlers = {}; }
  Emitter.prototype.on = function (name, fn) {
    (this._handlers[name] = this._handlers[name] || []).push(fn);
    return this;
  };
  Emitter.prototype.off = function (name, fn) {
    var list = this._handlers[name] || [];
    this._handlers[name] = list.filter(function (f) { return f !== fn; });
    return this;
  };
  Emitter.prototype.emit = function (name, value) {
    var list = (this._handlers[name] || []).slice();
    for (var i = 0; i < list.length; i++) {
      try { list[i](value); } catch (e) { if (root.console) root.console.error(e); }
    }
  };

  /** A bounded set of recently seen ids (dedupe of at-least-once delivery). */
  function RecentIds(size) { this.size = size; this.set = new Set(); this.order = []; }
  RecentIds.prototype.add = function (id) {
    if (this.set.has(id)) return false;
    this.set.add(id);
    this.order.push(id);
    if (this.order.length > this.size) this.set.delete(this.order.shift());
    return true;
  };

  // ---------------------------------------------------------------- transports
  //
  // A transport reads events after a cursor and reports to its client through
  // client._ready(t, cursor), client._events(t, list) and client._failed(t, kind, why)
  // with kind "unsupported" (never got going: try the next transport), "network"
  // (was fine, or the network is down: reconnect with backoff), "auth" (log in again)
  // or "cursor" (the server rejected the cursor: bootstrap a new one).

  function Transport(client, name) {
    this.client = client;
    this.name = name;
    this.closed = false;
    this.isReady = false;
    this._timer = null;
  }
  Transport.prototype.fail = function (kind, why) {
    if (this.closed) return;
    this.close();
    this.client._failed(this, kind, why);
  };
  Transport.prototype.ready = function (cursor) {
    if (this.closed || this.isReady) return;
    this.isReady = true;
    this.client._ready(this, cursor);
  };
  Transport.prototype.deliver = function (list) {
    if (!this.closed) this.client._events(this, list);
  };
  Transport.prototype.close = function () {
    this.closed = true;
    if (this._timer) clearTimeout(this._timer);
  };
  Transport.prototype.canSend = function () { return false; };

  // --- WebSocket
  function WsTransport(client) { Transport.call(this, client, "ws"); this._refs = {}; this._n = 0; }
  WsTransport.prototype = Object.create(Transport.prototype);
  WsTransport.prototype.open = function (cursor, ticket) {
    var self = this, c = this.client, opts = c.options;
    var base = c._absolute("/v1/events/ws").replace(/^http/, "ws");
    var sock;
    try {
      sock = new root.WebSocket(base + query({ticket: ticket, cursor: cursor,
        own_prefix: c._sendPrefix + "-"}));
    } catch (e) {
      return this.fail("unsupported", "WebSocket constructor failed: " + e.message);
    }
    this.sock = sock;
    this._timer = setTimeout(function () {
      self.fail("unsupported", "no ready frame within " + opts.wsTimeout + " ms");
    }, opts.wsTimeout);
    sock.onmessage = function (msg) {
      var frame;
      try { frame = JSON.parse(msg.data); } catch (e) { return; }
      self._seen();
      if (frame.ref && self._refs[frame.ref]) {
        var waiter = self._refs[frame.ref];
        delete self._refs[frame.ref];
        return frame.type === "error" ? waiter.reject(frame.data) : waiter.resolve(frame.data);
      }
      if (frame.type === "ready") return self.ready(frame.data.cursor);
      if (frame.type === "ping" || frame.type === "pong") return;
      self.deliver([frame]);
    };
    sock.onclose = function (ev) {
      if (ev.code === 4001) return self.fail("auth", "session revoked");
      // Closed before "ready": the handshake was refused (a proxy, a firewall).
      self.fail(self.isReady ? "network" : "unsupported",
        "socket closed (" + ev.code + (ev.reason ? " " + ev.reason : "") + ")");
    };
    sock.onerror = function () { /* onclose follows with the details */ };
  };
  WsTransport.prototype._seen = function () {
    var self = this;
    if (this._timer) clearTimeout(this._timer);
    if (!this.isReady) return;  // the handshake timer runs until "ready"
    this._timer = setTimeout(function () {
      self.fail("network", "no frame for " + self.client.options.wsIdleTimeout + " ms");
    }, this.client.options.wsIdleTimeout);
  };
  WsTransport.prototype.ready = function (cursor) {
    Transport.prototype.ready.call(this, cursor);
    this._seen();
  };
  WsTransport.prototype.canSend = function () {
    return !this.closed && this.isReady && this.sock && this.sock.readyState === 1;
  };
  /** Send a frame; resolves with the ack's data, rejects with the error's data. */
  WsTransport.prototype.request = function (frame, timeout) {
    var self = this;
    return new Promise(function (resolve, reject) {
      var ref = "r" + (++self._n);
      var timer = setTimeout(function () {
        delete self._refs[ref];
        reject(SwitchboardError(0, "timeout", "no acknowledgement"));
      }, timeout);
      self._refs[ref] = {
        resolve: function (d) { clearTimeout(timer); resolve(d); },
        reject: function (d) {
          clearTimeout(timer);
          reject(SwitchboardError(d.status || 400, d.code, d.message, {error: d}));
        }
      };
      try {
        self.sock.send(JSON.stringify(assign({ref: ref}, frame)));
      } catch (e) {
        delete self._refs[ref];
        clearTimeout(timer);
        reject(SwitchboardError(0, "network", e.message));
      }
    });
  };
  WsTransport.prototype.close = function () {
    Transport.prototype.close.call(this);
    for (var ref in this._refs) this._refs[ref].reject({status: 0, code: "network", message: "closed"});
    this._refs = {};
    if (this.sock) {
      this.sock.onmessage = this.sock.onclose = this.sock.onerror = null;
      try { this.sock.close(1000); } catch (e) { /* already closed */ }
    }
  };

  // --- Server-Sent Events
  function SseTransport(client) { Transport.call(this, client, "sse"); }
  SseTransport.prototype = Object.create(Transport.prototype);
  SseTransport.prototype.open = function (cursor, ticket) {
    var self = this, opts = this.client.options;
    var url = this.client._absolute("/v1/events/stream") + query({ticket: ticket, cursor: cursor,
      own_prefix: this.client._sendPrefix + "-"});
    var es;
    try { es = new root.EventSource(url); } catch (e) {
      return this.fail("unsupported", "EventSource failed: " + e.message);
    }
    this.es = es;
    // A buffering proxy (nginx with proxy_buffering on) holds the whole stream back:
    // no "ready" within a few seconds means this path cannot stream.
    this._timer = setTimeout(function () {
      self.fail("unsupported", "no ready event within " + opts.sseReadyTimeout + " ms (buffered?)");
    }, opts.sseReadyTimeout);
    es.onmessage = function (msg) {
      var ev;
      try { ev = JSON.parse(msg.data); } catch (e) { return; }
      if (ev.type === "ready") {
        clearTimeout(self._timer);
        return self.ready(ev.data.cursor);
      }
      if (ev.type === "close") {
        return self.fail(ev.data && ev.data.reason === "session_revoked" ? "auth" : "network",
          "server closed the stream: " + (ev.data && ev.data.reason));
      }
      self.deliver([ev]);
    };
    es.onerror = function () {
      // The browser would reconnect by itself, but with a spent ticket: take over.
      self.fail(self.isReady ? "network" : "unsupported", "stream error");
    };
  };
  SseTransport.prototype.close = function () {
    Transport.prototype.close.call(this);
    if (this.es) {
      this.es.onmessage = this.es.onerror = null;
      this.es.close();
    }
  };

  // --- long-poll and poll (XMLHttpRequest only)
  function PollTransport(client, name) {
    Transport.call(this, client, name);
    this.handle = {};
    this.cursor = null;
  }
  PollTransport.prototype = Object.create(Transport.prototype);
  PollTransport.prototype.open = function (cursor) {
    this.cursor = cursor;
    this._next(0);  // the first request answers at once: "ready" without a 25 s wait
  };
  PollTransport.prototype._next = function (wait) {
    var self = this, c = this.client, opts = c.options;
    if (this.closed) return;
    // Not woken for this client's own sends (it has them from their answers).
    var url = c._absolute("/v1/events") + query({cursor: this.cursor, wait: wait,
      own_prefix: wait > 0 ? c._sendPrefix + "-" : null});
    this.handle = {};
    http("GET", url, {token: c.token, timeout: (wait + 10) * 1000, handle: this.handle})
      .then(function (body) {
        if (self.closed) return;
        self.ready(self.cursor);
        self.deliver(body.events);
        self.cursor = body.cursor;
        if (!self.closed) self.client._pollCursor(self, body.cursor);
        if (body.closed) return self.fail(body.closed === "session_revoked" ? "auth" : "network", body.closed);
        if (self.name === "longpoll") {
          self._next(opts.longpollWait);
        } else {
          self._timer = setTimeout(function () { self._next(0); }, opts.pollInterval);
        }
      }, function (err) {
        if (self.closed) return;
        if (err.status === 401) return self.fail("auth", err.message);
        if (err.code === "invalid_cursor") return self.fail("cursor", err.message);
        // A long-poll held past its deadline without an answer: a proxy buffers it.
        if (self.name === "longpoll" && err.code === "timeout" && !self.isReady) {
          return self.fail("unsupported", "long-poll never answered");
        }
        self.fail("network", err.message);
      });
  };
  PollTransport.prototype.close = function () {
    Transport.prototype.close.call(this);
    if (this.handle.abort) this.handle.abort();
  };

  var IMPLS = {
    ws: function (c) { return new WsTransport(c); },
    sse: function (c) { return new SseTransport(c); },
    longpoll: function (c) { return new PollTransport(c, "longpoll"); },
    poll: function (c) { return new PollTransport(c, "poll"); }
  };

  // ---------------------------------------------------------------- the client

  /**
   * Events: "state" {state, transport}, "transport" {from, to, reason}, "message",
   * "receipt", "presence", "typing", "conversation" (created, member added/removed),
   * "friend", "resync" {cursor, reason}, "event" (every event, after dedupe),
   * "pending"/"sent"/"send_failed" (the outbox), "unauthorized", "log" (diagnostics).
   */
  function Client(options) {
    Emitter.call(this);
    this.options = assign({}, DEFAULTS, options);
    if (this.options.transport === "legacy") {
      this.options.transport = null;
      this.options.legacy = true;
    }
    this.token = this.options.token;
    this.cursor = this.options.cursor || null;
    this.state = "idle";
    this.transport = null;     // the name of the transport in use
    this.current = null;       // its Transport object
    this._probe = null;        // a better transport being tried alongside
    this._demoted = {};        // name -> true: failed to get going this session
    this._attempts = 0;
    this._outbox = [];
    this._sending = false;
    // Starts this client's client_msg_ids: its connections name it (own_prefix), so
    // the server does not hand this client's own messages back on their own.
    this._sendPrefix = "c" + randomId("").slice(-10);
    this._eventIds = new RecentIds(5000);
    this._messages = new RecentIds(5000);
    this._upgradeDelay = this.options.upgradeAfter;
    this._timers = {};
    this.history = [];         // [{at, from, to, reason}] transport changes, for the UI/tests
    this.fallbacks = [];       // [{at, from, to, reason}] transports given up on
    this.startedAt = null;
    this._storage = this.options.storage || (function () {
      try { return root.localStorage; } catch (e) { return null; }
    })();
  }
  Client.prototype = Object.create(Emitter.prototype);

  Client.prototype.available = function (name) {
    if (name === "ws") return !this.options.legacy && typeof root.WebSocket === "function";
    if (name === "sse") return !this.options.legacy && typeof root.EventSource === "function";
    return name === "longpoll" || name === "poll";
  };

  /** The transports to try, best first (a forced one alone). */
  Client.prototype.candidates = function () {
    var self = this;
    var forced = this.options.transport;
    if (forced) return this.available(forced) ? [forced] : ["longpoll"];
    return this.options.transports.filter(function (n) { return self.available(n); });
  };

  Client.prototype._absolute = function (path) {
    var base = this.options.baseUrl;
    if (!base) base = root.location.protocol + "//" + root.location.host;
    return base.replace(/\/$/, "") + path;
  };

  /** An authenticated API call: request("GET", "/v1/conversations"). */
  Client.prototype.request = function (method, path, body, opts) {
    var self = this;
    return http(method, this._absolute(path), assign({token: this.token, body: body}, opts))
      .catch(function (err) {
        if (err.status === 401) self.emit("unauthorized", err);
        throw err;
      });
  };

  Client.prototype._log = function (text) { this.emit("log", text); };

  Client.prototype._setState = function (state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", {state: state, transport: this.transport});
  };

  Client.prototype._later = function (key, ms, fn) {
    clearTimeout(this._timers[key]);
    this._timers[key] = setTimeout(fn, ms);
  };

  /** Get a cursor (before any state is fetched), then connect. Resolves with the cursor. */
  Client.prototype.start = function () {
    var self = this;
    if (this.state !== "idle" && this.state !== "stopped") return Promise.resolve(this.cursor);
    this._stopped = false;
    this.startedAt = Date.now();
    this._setState("connecting");
    this._restoreWinner();
    if (root.addEventListener && !this._netListeners) {
      this._netListeners = {
        offline: function () { self._wentOffline(); },
        online: function () { self._cameOnline(); }
      };
      root.addEventListener("offline", this._netListeners.offline);
      root.addEventListener("online", this._netListeners.online);
    }
    return this._bootstrap().then(function (cursor) {
      self._connect("start");
      return cursor;
    });
  };

  Client.prototype._bootstrap = function () {
    var self = this;
    if (this.cursor) return Promise.resolve(this.cursor);
    var attempt = 0;
    function tryOnce() {
      return self.request("GET", "/v1/events").then(function (body) {
        self.cursor = body.cursor;
        return body.cursor;
      }, function (err) {
        if (self._stopped || err.status === 401) throw err;
        attempt++;
        return new Promise(function (r) { setTimeout(r, backoff(self.options, attempt)); }).then(tryOnce);
      });
    }
    return tryOnce();
  };

  Client.prototype.stop = function () {
    this._stopped = true;
    for (var k in this._timers) clearTimeout(this._timers[k]);
    if (this.current) this.current.close();
    if (this._probe) this._probe.close();
    this.current = this._probe = null;
    if (this._netListeners && root.removeEventListener) {
      root.removeEventListener("offline", this._netListeners.offline);
      root.removeEventListener("online", this._netListeners.online);
      this._netListeners = null;
    }
    this._setState("stopped");
  };

  /** Switch now: a name from ORDER forces it, null goes back to automatic choice. */
  Client.prototype.setTransport = function (name) {
    this.options.transport = name === "auto" ? null : name;
    this._demoted = {};
    this._forget();
    this._switchReason = "forced";
    if (this.state === "idle" || this.state === "stopped") return;
    if (this.current) this.current.close();
    if (this._probe) this._probe.close();
    this.current = this._probe = null;
    this._connect("switched by the user");
  };

  Client.prototype._pick = function () {
    var list = this.candidates();
    for (var i = 0; i < list.length; i++) if (!this._demoted[list[i]]) return list[i];
    return list[list.length - 1];
  };

  Client.prototype._connect = function (reason) {
    if (this._stopped) return;
    clearTimeout(this._timers.reconnect);
    var name = this._pick();
    this._setState(this._attempts ? "reconnecting" : "connecting");
    this._log("connecting over " + name + " (" + reason + ") from " + this.cursor);
    this._open(name, false);
  };

  Client.prototype._open = function (name, asProbe) {
    var self = this;
    var t = IMPLS[name](this);
    if (asProbe) this._probe = t; else this.current = t;
    t.probe = asProbe;
    if (name === "ws" || name === "sse") {
      // EventSource and WebSocket cannot send headers: a single-use ticket, never the token.
      this.request("POST", "/v1/events/tickets").then(function (body) {
        if (!t.closed) t.open(self.cursor, body.ticket);
      }, function (err) {
        // The ticket is plain HTTP: failing it says the network (or the session) is gone.
        t.fail(err.status === 401 ? "auth" : "network", "ticket: " + err.message);
      });
    } else {
      t.open(this.cursor);
    }
  };

  Client.prototype._ready = function (t, cursor) {
    var upgraded = t.probe;
    if (t.probe) {
      if (t !== this._probe) return t.close();
      this._probe = null;
      t.probe = false;
      this._log("upgrade probe over " + t.name + " succeeded");
      if (this.current) this.current.close();
      this.current = t;
      this._upgradeDelay = this.options.upgradeAfter;
    } else if (t !== this.current) {
      return t.close();
    }
    if (!this.cursor) this.cursor = cursor;
    delete this._demoted[t.name];
    this._attempts = 0;
    var previous = this.transport;
    this.transport = t.name;
    if (!this.options.transport) this._remember(t.name);
    this._setState("connected");
    if (previous !== t.name) {
      var change = {from: previous, to: t.name, at: Date.now(),
        reason: upgraded ? "upgrade" : (this._switchReason || "connect")};
      this.history.push(change);
      this.emit("transport", change);
    }
    this._switchReason = null;
    this._scheduleUpgrade();
    this._pump();
  };

  Client.prototype._failed = function (t, kind, why) {
    var self = this;
    this._log(t.name + " failed (" + kind + "): " + why);
    if (t.probe) {
      if (t === this._probe) this._probe = null;
      this._upgradeDelay = Math.min(this._upgradeDelay * 2, this.options.upgradeMax);
      this._scheduleUpgrade();
      return;
    }
    if (t !== this.current) return;
    this.current = null;
    if (this._stopped) return;
    if (kind === "auth") {
      this.stop();
      this.emit("unauthorized", SwitchboardError(401, "unauthorized", why));
      return;
    }
    if (kind === "cursor") {
      var old = this.cursor;
      this.cursor = null;
      this._bootstrap().then(function (cursor) {
        self.emit("resync", {cursor: cursor, reason: "invalid_cursor", previous: old});
        self._connect("new cursor");
      }, function () { /* stopped or logged out */ });
      return;
    }
    if (kind === "unsupported" && !this.options.transport && this.candidates().length > 1) {
      // Blocked or held back: fall to the next transport at once, and try again later.
      this._demoted[t.name] = true;
      var from = t.name, to = this._pick();
      if (to !== from) {
        this._log("falling back from " + from + " to " + to + ": " + why);
        this._switchReason = "fallback: " + why;
        var fell = {from: from, to: to, reason: why, at: Date.now()};
        this.fallbacks.push(fell);
        this.emit("fallback", fell);
        this._connect("fallback from " + from);
        return;
      }
    }
    if (this._offline) return;  // the "online" event reconnects
    this._attempts++;
    this._setState("reconnecting");
    var delay = backoff(this.options, this._attempts);
    this._log("reconnecting in " + delay + " ms");
    this._later("reconnect", delay, function () { self._connect("reconnect after " + why); });
  };

  Client.prototype._wentOffline = function () {
    this._offline = true;
    this._log("browser went offline");
    if (this.current) this.current.close();
    if (this._probe) this._probe.close();
    this.current = this._probe = null;
    clearTimeout(this._timers.reconnect);
    if (!this._stopped && this.state !== "idle") this._setState("offline");
  };

  Client.prototype._cameOnline = function () {
    this._offline = false;
    this._log("browser back online");
    if (this._stopped || this.state === "idle") return;
    this._attempts = 0;
    if (!this.current) this._connect("back online");
    this._pump();
  };

  // --- remembering the winner, and upgrades

  Client.prototype._remember = function (name) {
    if (!this.options.remember || !this._storage) return;
    try { this._storage.setItem(STORAGE_KEY, JSON.stringify({transport: name, at: Date.now()})); } catch (e) { /* full or denied */ }
  };

  Client.prototype._forget = function () {
    try { if (this._storage) this._storage.removeItem(STORAGE_KEY); } catch (e) { /* denied */ }
  };

  Client.prototype._restoreWinner = function () {
    if (!this.options.remember || !this._storage || this.options.transport) return;
    var saved = null;
    try { saved = JSON.parse(this._storage.getItem(STORAGE_KEY) || "null"); } catch (e) { saved = null; }
    if (!saved || Date.now() - saved.at > 86400000) return;
    var list = this.candidates();
    var at = list.indexOf(saved.transport);
    // Start where it worked last time; the upgrade probe tries the better ones later.
    for (var i = 0; i < at; i++) this._demoted[list[i]] = true;
    if (at > 0) this._log("starting with the remembered " + saved.transport);
  };

  Client.prototype._scheduleUpgrade = function () {
    var self = this;
    clearTimeout(this._timers.upgrade);
    if (this.options.transport || !this.current || this._probe) return;
    var list = this.candidates();
    var better = list.slice(0, list.indexOf(this.current.name));
    if (!better.length) return;
    this._later("upgrade", this._upgradeDelay, function () {
      if (self._stopped || self._offline || !self.current || self._probe) return;
      var name = better[0];
      self._log("probing " + name + " for an upgrade");
      delete self._demoted[name];
      self._open(name, true);
      var probe = self._probe;
      // If the probe fails it is demoted again (the next probe doubles its delay).
      self._later("probeFail", 30000, function () {
        if (self._probe === probe) { probe.fail("unsupported", "probe took too long"); }
      });
      if (probe) self._demoted[name] = true;
    });
  };

  // --- incoming events

  Client.prototype._events = function (t, list) {
    if (t !== this.current) return;  // a transport being replaced, or a probe not yet ready
    for (var i = 0; i < list.length; i++) this._dispatch(list[i]);
  };

  Client.prototype._pollCursor = function (t, cursor) {
    if (t === this.current && cursor) this.cursor = cursor;
  };

  Client.prototype._dispatch = function (ev) {
    if (!ev || CONTROL[ev.type]) return;
    if (ev.type === "reset") {
      this.cursor = ev.data.cursor;
      this._log("reset: resynchronising from " + ev.data.cursor);
      this.emit("resync", {cursor: ev.data.cursor, reason: ev.data.reason || "reset"});
      return;
    }
    if (ev.id) {
      if (!this._eventIds.add(ev.id)) return;  // seen already (a replay after a switch)
      this.cursor = ev.id;
    }
    var data = ev.data || {};
    switch (ev.type) {
      case "message.created":
        if (this._messages.add(String(data.id))) this.emit("message", data);
        break;
      case "receipt": this.emit("receipt", data); break;
      case "presence": this.emit("presence", data); break;
      case "typing": this.emit("typing", data); break;
      default:
        if (ev.type.indexOf("conversation.") === 0) this.emit("conversation", ev);
        else if (ev.type.indexOf("friend.") === 0) this.emit("friend", ev);
    }
    this.emit("event", ev);
  };

  // --- sending

  /**
   * Send a message. Resolves with the stored message once the server acknowledged it;
   * retried with the same client_msg_id (over WebSocket when on it, else HTTP) until
   * then. Rejects only on an error a retry cannot fix (not a member, too long...).
   */
  Client.prototype.send = function (conversationId, text, opts) {
    var self = this;
    var item = {conversationId: conversationId, text: text,
      clientMsgId: (opts && opts.clientMsgId) || randomId(this._sendPrefix), attempts: 0, via: []};
    var promise = new Promise(function (resolve, reject) { item.resolve = resolve; item.reject = reject; });
    this._outbox.push(item);
    this.emit("pending", {conversation_id: conversationId, client_msg_id: item.clientMsgId, text: text});
    setTimeout(function () { self._pump(); }, 0);
    return promise;
  };

  /** Messages not yet acknowledged (in order). */
  Client.prototype.pending = function () {
    return this._outbox.map(function (i) {
      return {conversation_id: i.conversationId, client_msg_id: i.clientMsgId, text: i.text, attempts: i.attempts};
    });
  };

  Client.prototype._pump = function () {
    var self = this;
    if (this._sending || !this._outbox.length || this._stopped || this.state === "idle") return;
    if (this._offline) return;
    var item = this._outbox[0];
    this._sending = true;
    var ws = this.current && this.current.canSend() ? this.current : null;
    item.attempts++;
    item.via.push(ws ? "ws" : "http");
    var attempt = ws
      ? ws.request({type: "send", conversation_id: item.conversationId,
        client_msg_id: item.clientMsgId, text: item.text}, this.options.sendTimeout)
        .then(function (data) { return data.message; })
      : this.request("POST", "/v1/conversations/" + item.conversationId + "/messages",
        {client_msg_id: item.clientMsgId, text: item.text}, {timeout: this.options.sendTimeout});
    attempt.then(function (message) {
      self._outbox.shift();
      self._sending = false;
      if (self._messages.add(String(message.id))) self.emit("message", message);
      self.emit("sent", {message: message, client_msg_id: item.clientMsgId, attempts: item.attempts, via: item.via});
      item.resolve(message);
      self._pump();
    }, function (err) {
      self._sending = false;
      if (!err.retryable) {
        self._outbox.shift();
        self.emit("send_failed", {client_msg_id: item.clientMsgId, conversation_id: item.conversationId, error: err});
        item.reject(err);
        self._pump();
        return;
      }
      var delay = backoff(self.options, item.attempts);
      self._log("send " + item.clientMsgId + " failed (" + err.code + "), retry in " + delay + " ms");
      self._later("send", delay, function () { self._pump(); });
    });
  };

  /** Mark a conversation read up to a message (best effort; resolves with the mark). */
  Client.prototype.markRead = function (conversationId, messageId) {
    var ws = this.current && this.current.canSend() ? this.current : null;
    if (ws) {
      return ws.request({type: "read", conversation_id: conversationId, message_id: String(messageId)},
        this.options.sendTimeout);
    }
    return this.request("POST", "/v1/conversations/" + conversationId + "/read", {message_id: String(messageId)});
  };

  /** Tell the other members you are typing (ephemeral; throttled here and on the server). */
  Client.prototype.typing = function (conversationId) {
    var now = Date.now();
    this._typingAt = this._typingAt || {};
    if (now - (this._typingAt[conversationId] || 0) < 2000) return Promise.resolve(false);
    this._typingAt[conversationId] = now;
    var ws = this.current && this.current.canSend() ? this.current : null;
    var p = ws
      ? ws.request({type: "typing", conversation_id: conversationId}, 5000)
      : this.request("POST", "/v1/conversations/" + conversationId + "/typing");
    return p.then(function (d) { return d.delivered; }, function () { return false; });
  };

  // ---------------------------------------------------------------- accounts

  function session(baseUrl, path, body) {
    var base = baseUrl || (root.location.protocol + "//" + root.location.host);
    return http("POST", base.replace(/\/$/, "") + path, {body: body});
  }

  var Switchboard = {
    Client: Client,
    TRANSPORTS: ORDER.slice(),
    version: "1.0.0",
    randomId: randomId,
    /** Sign up: resolves with {token, expires_at, user}. */
    signUp: function (baseUrl, username, password, displayName) {
      var body = {username: username, password: password};
      if (displayName) body.display_name = displayName;
      return session(baseUrl, "/v1/users", body);
    },
    /** Log in: resolves with {token, expires_at, user}. */
    logIn: function (baseUrl, username, password) {
      return session(baseUrl, "/v1/sessions", {username: username, password: password});
    }
  };

  if (typeof module === "object" && module.exports) module.exports = Switchboard;
  root.Switchboard = Switchboard;
})(typeof window !== "undefined" ? window : this);
