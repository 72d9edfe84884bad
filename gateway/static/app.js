/*
 * The Switchboard demo chat: plain DOM code over switchboard.js (no framework, no build).
 *
 * URL parameters: ?transport=ws|sse|longpoll|poll forces a transport, ?legacy=1 acts
 * like a browser without WebSocket and EventSource (index.html removes them first).
 * The page keeps its session in localStorage; window.sb exposes the client and state
 * for the end-to-end tests.
 */
(function () {
  "use strict";

  var SESSION_KEY = "switchboard.session";
  var PAGE = 30;
  var LABELS = {ws: "WebSocket", sse: "SSE", longpoll: "Long-poll", poll: "Poll"};
  var params = new URLSearchParams(location.search);
  var forced = params.get("transport");
  var legacy = params.get("legacy") === "1" || forced === "legacy";
  if (forced && !LABELS[forced]) forced = null;

  var $ = function (id) { return document.getElementById(id); };
  var state = {
    me: null, token: null, client: null,
    convs: new Map(),        // id -> conversation (with unread_count, read marks)
    order: [],               // conversation ids, most recent first
    msgs: new Map(),         // id -> {list: [messages by seq], ids: Set, more: bool, loaded: bool}
    pending: new Map(),      // client_msg_id -> {conversation_id, text, failed}
    presence: new Map(),     // user id -> {online, last_seen}
    typing: new Map(),       // conversation id -> Map(user id -> expires at ms)
    current: null,
    signup: false
  };
  window.sb = state;

  // ------------------------------------------------------------------ helpers

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function hue(s) {
    var h = 0;
    for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) % 360;
    return h;
  }

  function initials(name) {
    var parts = String(name || "?").replace(/[_.]/g, " ").trim().split(/\s+/);
    return ((parts[0] || "?")[0] + (parts.length > 1 ? parts[1][0] : "")).toUpperCase();
  }

  function avatar(node, name, opts) {
    node.textContent = initials(name);
    node.style.setProperty("--hue", hue(name || ""));
    node.classList.toggle("group", !!(opts && opts.group));
    if (opts && opts.presence !== undefined) {
      var dot = el("span", "presence" + (opts.presence ? " online" : ""));
      dot.setAttribute("data-online", opts.presence ? "1" : "0");
      node.appendChild(dot);
    }
    return node;
  }

  function time(ms) {
    return new Date(ms).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  }

  function shortWhen(ms) {
    var d = new Date(ms), now = new Date();
    if (d.toDateString() === now.toDateString()) return time(ms);
    return d.toLocaleDateString([], {month: "short", day: "numeric"});
  }

  function dayLabel(ms) {
    var d = new Date(ms), now = new Date();
    var y = new Date(now.getTime() - 86400000);
    if (d.toDateString() === now.toDateString()) return "Today";
    if (d.toDateString() === y.toDateString()) return "Yesterday";
    return d.toLocaleDateString([], {weekday: "long", month: "long", day: "numeric"});
  }

  function lastSeen(ms) {
    if (!ms) return "offline";
    var s = Math.round((Date.now() - ms) / 1000);
    if (s < 60) return "last seen just now";
    if (s < 3600) return "last seen " + Math.round(s / 60) + " min ago";
    return "last seen " + shortWhen(ms);
  }

  var toastTimer;
  function toast(text) {
    var t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.hidden = true; }, 3500);
  }

  function api(method, path, body) { return state.client.request(method, path, body); }

  function others(conv) {
    return conv.members.filter(function (m) { return m.id !== state.me.id; });
  }

  function convName(conv) {
    if (conv.kind === "group") return conv.title || "Group";
    var o = others(conv)[0];
    return o ? (o.display_name || o.username) : "Just you";
  }

  function memberName(conv, userId) {
    for (var i = 0; i < conv.members.length; i++) {
      if (conv.members[i].id === userId) return conv.members[i].display_name || conv.members[i].username;
    }
    return "Someone";
  }

  function isOnline(userId) {
    var p = state.presence.get(userId);
    return !!(p && p.online);
  }

  // ------------------------------------------------------------------ sign in

  function showAuth() {
    $("app").hidden = true;
    $("auth").hidden = false;
    $("auth-username").focus();
  }

  function setAuthMode(signup) {
    state.signup = signup;
    $("tab-login").classList.toggle("active", !signup);
    $("tab-signup").classList.toggle("active", signup);
    $("auth-display-row").hidden = !signup;
    $("auth-submit").textContent = signup ? "Create account" : "Log in";
    $("auth-password").setAttribute("autocomplete", signup ? "new-password" : "current-password");
    $("auth-error").textContent = "";
  }

  $("tab-login").onclick = function () { setAuthMode(false); };
  $("tab-signup").onclick = function () { setAuthMode(true); };
  $("auth-form").onsubmit = function (e) {
    e.preventDefault();
    var u = $("auth-username").value.trim(), p = $("auth-password").value;
    var button = $("auth-submit");
    button.disabled = true;
    $("auth-error").textContent = "";
    var call = state.signup
      ? Switchboard.signUp("", u, p, $("auth-display").value.trim())
      : Switchboard.logIn("", u, p);
    call.then(function (session) {
      localStorage.setItem(SESSION_KEY, JSON.stringify({token: session.token, user: session.user}));
      $("auth-password").value = "";
      enter(session.token, session.user);
    }, function (err) {
      $("auth-error").textContent = err.status === 0 ? "Cannot reach the server." : err.message;
    }).then(function () { button.disabled = false; });
  };

  function logout() {
    var client = state.client;
    if (client) {
      client.request("DELETE", "/v1/sessions/current").catch(function () { /* gone anyway */ });
      client.stop();
    }
    localStorage.removeItem(SESSION_KEY);
    location.hash = "";
    location.reload();
  }
  $("logout").onclick = logout;

  // ------------------------------------------------------------------ start

  function enter(token, user) {
    state.token = token;
    state.me = user;
    $("auth").hidden = true;
    $("app").hidden = false;
    avatar($("me-avatar"), user.display_name || user.username);
    $("me-name").textContent = user.display_name || user.username;
    $("me-username").textContent = "@" + user.username;
    $("transport-select").value = forced || "auto";

    var client = new Switchboard.Client({
      token: token,
      transport: legacy ? "legacy" : forced,
      pollInterval: Number(params.get("poll_interval")) || undefined,
      sseReadyTimeout: Number(params.get("sse_timeout")) || undefined,
      upgradeAfter: Number(params.get("upgrade_after")) || undefined
    });
    state.client = client;
    state.log = [];
    client.on("log", function (line) {
      state.log.push(new Date().toISOString().slice(11, 23) + " " + line);
      if (state.log.length > 300) state.log.shift();
    });
    client.on("state", renderConnection);
    client.on("transport", renderConnection);
    client.on("message", onMessage);
    client.on("pending", onPending);
    client.on("send_failed", onSendFailed);
    client.on("receipt", onReceipt);
    client.on("presence", function (p) {
      state.presence.set(p.user_id, {online: p.online, last_seen: p.last_seen});
      renderList();
      renderHeader();
    });
    client.on("typing", onTyping);
    client.on("conversation", function () { loadConversations(); });
    client.on("resync", function () {
      loadConversations();
      if (state.current) loadHistory(state.current, true);
    });
    client.on("unauthorized", function () {
      localStorage.removeItem(SESSION_KEY);
      toast("Your session ended. Please log in again.");
      setTimeout(function () { location.reload(); }, 1200);
    });
    renderConnection();
    // Cursor first, then state: anything in between arrives as an event.
    client.start().then(function () {
      return loadConversations();
    }).then(function () {
      var m = /^#c(\d+)$/.exec(location.hash);
      if (m && state.convs.has(Number(m[1]))) openConversation(Number(m[1]));
    }).catch(function (err) {
      if (err && err.status !== 401) toast("Could not load: " + err.message);
    });
    setInterval(refreshPresence, 10000);
    setInterval(function () { renderHeader(); }, 30000);
  }

  // ------------------------------------------------------------------ connection

  function renderConnection() {
    var c = state.client, pill = $("transport");
    var label = c.transport ? LABELS[c.transport] : "Connecting";
    if (c.state === "reconnecting") label = "Reconnecting" + (c.transport ? " · " + LABELS[c.transport] : "");
    if (c.state === "offline") label = "Offline";
    if (c.state === "stopped") label = "Disconnected";
    $("transport-label").textContent = label + (c.state === "connecting" ? "…" : "");
    pill.setAttribute("data-transport", c.transport || "");
    pill.setAttribute("data-state", c.state);
    pill.title = "Transport: " + (c.transport || "none yet") + " · " + c.state +
      (c.history.length ? "\n" + c.history.map(function (h) {
        return (h.from || "start") + " → " + h.to + " (" + h.reason + ")";
      }).join("\n") : "");
    var banner = $("banner");
    if (c.state === "offline") { banner.textContent = "You are offline. Messages will be sent when the connection returns."; banner.hidden = false; }
    else if (c.state === "reconnecting") { banner.textContent = "Reconnecting…"; banner.hidden = false; }
    else banner.hidden = true;
  }

  $("transport-select").onchange = function () {
    var v = this.value;
    forced = v === "auto" ? null : v;
    var url = new URL(location.href);
    if (forced) url.searchParams.set("transport", forced); else url.searchParams.delete("transport");
    history.replaceState(null, "", url.toString());
    state.client.setTransport(v);
    toast(forced ? "Using " + LABELS[forced] : "Choosing the best transport automatically");
  };

  // ------------------------------------------------------------------ conversations

  function loadConversations() {
    return api("GET", "/v1/conversations").then(function (body) {
      var seen = new Set();
      body.conversations.forEach(function (c) {
        var old = state.convs.get(c.id);
        c.read = old ? old.read : {};
        if (state.current === c.id) c.unread_count = 0;
        state.convs.set(c.id, c);
        seen.add(c.id);
      });
      state.convs.forEach(function (_, id) { if (!seen.has(id)) state.convs.delete(id); });
      sortConversations();
      renderList();
      refreshPresence();
      if (state.current) renderHeader();
    });
  }

  function sortConversations() {
    state.order = Array.from(state.convs.values()).sort(function (a, b) {
      var ta = a.last_message ? a.last_message.created_at : a.created_at;
      var tb = b.last_message ? b.last_message.created_at : b.created_at;
      return tb - ta;
    }).map(function (c) { return c.id; });
  }

  function refreshPresence() {
    if (!state.client) return;
    var ids = new Set();
    state.convs.forEach(function (c) { others(c).forEach(function (m) { ids.add(m.id); }); });
    if (!ids.size) return;
    var list = Array.from(ids).slice(0, 200);
    api("GET", "/v1/presence?user_ids=" + list.join(",")).then(function (body) {
      body.presence.forEach(function (p) { state.presence.set(p.user_id, {online: p.online, last_seen: p.last_seen}); });
      renderList();
      renderHeader();
    }, function () { /* next round */ });
  }

  function renderList() {
    var nav = $("conversations");
    nav.textContent = "";
    $("list-empty").hidden = state.order.length > 0;
    state.order.forEach(function (id) {
      var c = state.convs.get(id);
      var row = el("button", "conv" + (id === state.current ? " active" : "") + (c.unread_count ? " has-unread" : ""));
      row.type = "button";
      row.setAttribute("data-id", id);
      row.setAttribute("data-title", convName(c));
      var peer = c.kind === "direct" ? others(c)[0] : null;
      row.appendChild(avatar(el("div", "avatar"), convName(c), {
        group: c.kind === "group", presence: peer ? isOnline(peer.id) : undefined}));
      var main = el("div", "conv-main");
      var top = el("div", "conv-top");
      top.appendChild(el("span", "conv-title", convName(c)));
      var when = c.last_message ? c.last_message.created_at : c.created_at;
      top.appendChild(el("span", "conv-time", shortWhen(when)));
      main.appendChild(top);
      var bottom = el("div", "conv-bottom");
      var typers = typingNames(c);
      var preview;
      if (typers) {
        preview = el("span", "conv-preview typing-now", typers);
      } else if (c.last_message) {
        var lm = c.last_message;
        var who = lm.sender_id === state.me.id ? "You: " : (c.kind === "group" ? memberName(c, lm.sender_id) + ": " : "");
        preview = el("span", "conv-preview", who + lm.text);
      } else {
        preview = el("span", "conv-preview", c.kind === "group" ? c.members.length + " members" : "Say hello 👋");
      }
      bottom.appendChild(preview);
      if (c.unread_count) bottom.appendChild(el("span", "unread", c.unread_count > 99 ? "99+" : String(c.unread_count)));
      main.appendChild(bottom);
      row.appendChild(main);
      row.onclick = function () { openConversation(id); };
      nav.appendChild(row);
    });
  }

  // ------------------------------------------------------------------ a chat

  function bucket(id) {
    var b = state.msgs.get(id);
    if (!b) { b = {list: [], ids: new Set(), more: true, loaded: false, loading: false}; state.msgs.set(id, b); }
    return b;
  }

  function addMessages(convId, messages) {
    var b = bucket(convId), added = 0, c = state.convs.get(convId);
    messages.forEach(function (m) {
      // The server counts writing a message as having read up to it (without a
      // receipt event): apply the same rule here.
      if (c && (c.read[m.sender_id] || 0) < m.seq) c.read[m.sender_id] = m.seq;
      if (b.ids.has(m.id)) return;
      b.ids.add(m.id);
      b.list.push(m);
      added++;
      if (m.sender_id === state.me.id) state.pending.delete(m.client_msg_id);
    });
    b.list.sort(function (x, y) { return x.seq - y.seq; });
    return added;
  }

  function openConversation(id) {
    var conv = state.convs.get(id);
    if (!conv) return;
    state.current = id;
    if (location.hash !== "#c" + id) history.replaceState(null, "", "#c" + id);
    $("chat-empty").hidden = true;
    $("chat-view").hidden = false;
    $("app").classList.add("chat-open");
    renderList();
    renderHeader();
    renderMessages(true);
    loadHistory(id, false);
    api("GET", "/v1/conversations/" + id).then(function (full) {
      var c = state.convs.get(id);
      if (!c) return;
      c.read = {};
      Object.keys(full.read || {}).forEach(function (u) { c.read[u] = full.read[u].seq; });
      if (state.current === id) renderMessages(false);
    }, function () { /* receipts follow as events */ });
    if (window.innerWidth > 760) $("composer-input").focus();
  }

  function loadHistory(id, reload) {
    var b = bucket(id);
    if (reload) { b.list = []; b.ids = new Set(); b.more = true; }
    return api("GET", "/v1/conversations/" + id + "/messages?limit=" + PAGE).then(function (body) {
      addMessages(id, body.messages);
      b.loaded = true;
      if (body.messages.length < PAGE) b.more = false;
      if (state.current === id) { renderMessages(true); markRead(id); }
    }, function (err) { toast("Could not load messages: " + err.message); });
  }

  function loadOlder() {
    var id = state.current, b = bucket(id);
    if (!id || !b.loaded || !b.more || b.loading || !b.list.length) return;
    b.loading = true;
    $("history-top").textContent = "Loading earlier messages…";
    var box = $("messages"), before = box.scrollHeight - box.scrollTop;
    api("GET", "/v1/conversations/" + id + "/messages?limit=" + PAGE + "&before=" + b.list[0].id)
      .then(function (body) {
        addMessages(id, body.messages);
        if (body.messages.length < PAGE) b.more = false;
        if (state.current === id) {
          renderMessages(false);
          box.scrollTop = box.scrollHeight - before;  // keep the reader's place
        }
      }, function (err) { toast("Could not load older messages: " + err.message); })
      .then(function () { b.loading = false; renderHistoryTop(); });
  }
  $("messages").addEventListener("scroll", function () {
    if (this.scrollTop < 80) loadOlder();
  });

  function renderHistoryTop() {
    var b = state.current ? bucket(state.current) : null;
    $("history-top").textContent = !b || !b.loaded ? "Loading…" :
      b.more ? "Scroll up for earlier messages" : (b.list.length ? "This is the beginning of the conversation" : "");
  }

  function renderHeader() {
    var c = state.current && state.convs.get(state.current);
    if (!c) return;
    $("chat-title").textContent = convName(c);
    var av = $("chat-avatar");
    var peer = c.kind === "direct" ? others(c)[0] : null;
    avatar(av, convName(c), {group: c.kind === "group", presence: peer ? isOnline(peer.id) : undefined});
    var sub = $("chat-subtitle");
    var typers = typingNames(c);
    var text, online = false;
    if (typers) {
      text = typers;
    } else if (peer) {
      online = isOnline(peer.id);
      var p = state.presence.get(peer.id);
      text = online ? "online" : lastSeen(p && p.last_seen);
    } else {
      var on = others(c).filter(function (m) { return isOnline(m.id); }).length;
      text = c.members.length + " members" + (on ? ", " + on + " online" : "");
    }
    sub.textContent = text;
    sub.classList.toggle("online", online);
  }

  function nearBottom() {
    var box = $("messages");
    return box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  }

  function readers(conv, seq) {
    return others(conv).filter(function (m) { return (conv.read[m.id] || 0) >= seq; });
  }

  function renderMessages(stick) {
    var c = state.convs.get(state.current);
    if (!c) return;
    var b = bucket(c.id);
    var box = $("messages"), list = $("message-list");
    var wasNear = nearBottom();
    list.textContent = "";
    var prevDay = null, prevSender = null, prevAt = 0;
    var items = b.list.slice();
    state.pending.forEach(function (p, cmid) {
      if (p.conversation_id === c.id) {
        items.push({pending: true, failed: p.failed, client_msg_id: cmid, text: p.text,
          sender_id: state.me.id, created_at: p.at, seq: Infinity});
      }
    });
    var lastOwn = null;
    items.forEach(function (m) { if (!m.pending && m.sender_id === state.me.id) lastOwn = m; });
    items.forEach(function (m) {
      var day = new Date(m.created_at).toDateString();
      if (day !== prevDay) {
        var d = el("div", "day");
        d.appendChild(el("span", null, dayLabel(m.created_at)));
        list.appendChild(d);
        prevSender = null;
      }
      prevDay = day;
      var own = m.sender_id === state.me.id;
      var first = m.sender_id !== prevSender || m.created_at - prevAt > 300000;
      var row = el("div", "msg" + (own ? " own" : "") + (first ? " first" : "") +
        (m.pending ? " pending" : "") + (m.failed ? " failed" : ""));
      if (m.id) row.setAttribute("data-id", m.id);
      row.setAttribute("data-seq", m.pending ? "" : m.seq);
      row.setAttribute("data-cmid", m.client_msg_id || "");
      if (first && !own && c.kind === "group") row.appendChild(el("div", "sender", memberName(c, m.sender_id)));
      var bubble = el("div", "bubble");
      bubble.appendChild(el("span", "text", m.text));
      var meta = el("span", "meta");
      meta.appendChild(el("span", null, m.pending ? (m.failed ? "failed" : "sending") : time(m.created_at)));
      if (own && !m.pending) {
        var read = readers(c, m.seq).length === others(c).length && others(c).length > 0;
        if (read) row.classList.add("read");
        meta.appendChild(el("span", "ticks", read ? "✓✓" : "✓"));
      }
      bubble.appendChild(meta);
      row.appendChild(bubble);
      if (m === lastOwn) {
        var who = readers(c, m.seq);
        var line = el("div", "receipt-line");
        line.setAttribute("data-receipt", who.length ? "read" : "sent");
        if (!who.length) line.textContent = "Sent";
        else if (c.kind === "direct") line.textContent = "Read";
        else line.textContent = who.length === others(c).length ? "Read by everyone" : "Read by " + who.map(function (u) { return u.display_name || u.username; }).join(", ");
        row.appendChild(line);
      }
      list.appendChild(row);
      prevSender = m.sender_id;
      prevAt = m.created_at;
    });
    renderHistoryTop();
    if (stick || wasNear) box.scrollTop = box.scrollHeight;
  }

  function markRead(id) {
    var b = bucket(id), c = state.convs.get(id);
    if (!c || document.visibilityState === "hidden") return;
    var last = null;
    for (var i = b.list.length - 1; i >= 0; i--) {
      if (b.list[i].sender_id !== state.me.id) { last = b.list[i]; break; }
    }
    c.unread_count = 0;
    renderList();
    if (!last || (c.read[state.me.id] || c.read_seq || 0) >= last.seq) return;
    c.read[state.me.id] = last.seq;
    state.client.markRead(id, last.id).catch(function () { /* next message retries */ });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && state.current) markRead(state.current);
  });

  // ------------------------------------------------------------------ events

  function onMessage(m) {
    var c = state.convs.get(m.conversation_id);
    if (!c) { loadConversations(); return; }
    var added = addMessages(m.conversation_id, [m]);
    if (!c.last_message || m.seq >= c.last_message.seq) c.last_message = m;
    var typers = state.typing.get(m.conversation_id);
    if (typers) typers.delete(m.sender_id);
    if (added && m.sender_id !== state.me.id && state.current !== m.conversation_id) c.unread_count = (c.unread_count || 0) + 1;
    sortConversations();
    if (state.current === m.conversation_id) {
      renderMessages(m.sender_id === state.me.id);
      renderHeader();
      if (m.sender_id !== state.me.id) markRead(m.conversation_id);
    }
    renderList();
  }

  function onPending(p) {
    state.pending.set(p.client_msg_id, {conversation_id: p.conversation_id, text: p.text, at: Date.now()});
    if (state.current === p.conversation_id) renderMessages(true);
  }

  function onSendFailed(f) {
    var p = state.pending.get(f.client_msg_id);
    if (p) p.failed = true;
    toast("Message not sent: " + f.error.message);
    if (state.current === f.conversation_id) renderMessages(false);
  }

  function onReceipt(r) {
    var c = state.convs.get(r.conversation_id);
    if (!c) return;
    if ((c.read[r.user_id] || 0) < r.seq) c.read[r.user_id] = r.seq;
    if (r.user_id === state.me.id) { c.unread_count = 0; c.read_seq = r.seq; renderList(); }
    if (state.current === r.conversation_id) renderMessages(false);
  }

  function typingNames(c) {
    var map = state.typing.get(c.id);
    if (!map) return "";
    var now = Date.now(), names = [];
    map.forEach(function (until, uid) { if (until > now) names.push(memberName(c, uid)); });
    if (!names.length) return "";
    if (c.kind === "direct") return "typing…";
    return names.length === 1 ? names[0] + " is typing…" : names.join(", ") + " are typing…";
  }

  function onTyping(t) {
    if (t.user_id === state.me.id) return;
    var map = state.typing.get(t.conversation_id) || new Map();
    state.typing.set(t.conversation_id, map);
    var ms = Math.max(1500, (t.expires_in || 5) * 1000);
    map.set(t.user_id, Date.now() + ms);
    renderTyping();
    setTimeout(renderTyping, ms + 50);
  }

  function renderTyping() {
    renderList();
    renderHeader();
    var box = $("typing");
    box.textContent = "";
    var c = state.current && state.convs.get(state.current);
    var names = c ? typingNames(c) : "";
    if (!names) return;
    var dots = el("span", "dots");
    dots.appendChild(el("i"));
    dots.appendChild(el("i"));
    dots.appendChild(el("i"));
    box.appendChild(dots);
    box.appendChild(el("span", null, c.kind === "direct" ? convName(c) + " is typing…" : names));
  }

  // ------------------------------------------------------------------ composing

  var input = $("composer-input");
  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 140) + "px";
  }
  input.addEventListener("input", function () {
    grow();
    if (state.current && input.value.trim()) state.client.typing(state.current);
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit ? $("composer").requestSubmit() : $("send").click();
    }
  });
  $("composer").onsubmit = function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || !state.current) return;
    input.value = "";
    grow();
    state.client.send(state.current, text).catch(function () { /* shown by send_failed */ });
  };
  $("back").onclick = function () {
    $("app").classList.remove("chat-open");
    state.current = null;
    history.replaceState(null, "", location.pathname + location.search);
    renderList();
  };

  // ------------------------------------------------------------------ new conversation

  var groupMode = false;
  function setKind(group) {
    groupMode = group;
    $("kind-direct").classList.toggle("active", !group);
    $("kind-group").classList.toggle("active", group);
    $("direct-row").hidden = group;
    $("group-rows").hidden = !group;
    $("new-submit").textContent = group ? "Create group" : "Start chat";
    $("new-error").textContent = "";
  }
  function openDialog() {
    $("dialog").hidden = false;
    setKind(false);
    $("new-username").value = $("new-title").value = $("new-members").value = "";
    $("new-username").focus();
  }
  $("new-chat").onclick = openDialog;
  $("list-empty-new").onclick = openDialog;
  $("kind-direct").onclick = function () { setKind(false); $("new-username").focus(); };
  $("kind-group").onclick = function () { setKind(true); $("new-title").focus(); };
  $("new-cancel").onclick = function () { $("dialog").hidden = true; };
  $("dialog").addEventListener("click", function (e) { if (e.target === this) this.hidden = true; });
  document.addEventListener("keydown", function (e) { if (e.key === "Escape") $("dialog").hidden = true; });

  function lookup(name) {
    return api("GET", "/v1/users?username=" + encodeURIComponent(name.trim().replace(/^@/, "")))
      .catch(function (err) {
        if (err.status === 404) throw new Error("No user called “" + name.trim() + "”.");
        throw err;
      });
  }

  $("new-form").onsubmit = function (e) {
    e.preventDefault();
    var button = $("new-submit");
    button.disabled = true;
    $("new-error").textContent = "";
    var work;
    if (!groupMode) {
      var name = $("new-username").value;
      work = lookup(name).then(function (user) {
        return api("POST", "/v1/conversations", {kind: "direct", user_id: user.id});
      });
    } else {
      var title = $("new-title").value.trim();
      var names = $("new-members").value.split(/[,\s]+/).filter(Boolean);
      if (!title) { work = Promise.reject(new Error("Give the group a name.")); }
      else {
        work = Promise.all(names.map(lookup)).then(function (users) {
          return api("POST", "/v1/conversations", {kind: "group", title: title,
            member_ids: users.map(function (u) { return u.id; })});
        });
      }
    }
    work.then(function (conv) {
      $("dialog").hidden = true;
      return loadConversations().then(function () { openConversation(conv.id); });
    }, function (err) {
      $("new-error").textContent = err.message;
    }).then(function () { button.disabled = false; });
  };

  // ------------------------------------------------------------------ boot

  var saved = null;
  try { saved = JSON.parse(localStorage.getItem(SESSION_KEY) || "null"); } catch (e) { saved = null; }
  if (saved && saved.token) enter(saved.token, saved.user); else showAuth();
})();
