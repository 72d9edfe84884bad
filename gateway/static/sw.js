/*
 * Switchboard service worker: shows a push notification for new messages and opens the
 * chat when it is clicked. Registered by push.js; payload format in docs/push.md.
 */
"use strict";

self.addEventListener("push", function (event) {
  var note = {};
  try { note = event.data ? event.data.json() : {}; } catch (e) { note = {}; }
  var title = note.conversation_title || note.sender_name || "Switchboard";
  var more = note.count > 1 ? " (" + note.count + " new messages)" : "";
  var body = note.preview !== undefined
    ? (note.conversation_title ? note.sender_name + ": " : "") + note.preview + more
    : "New message" + more; // the user turned previews off: no text was sent
  event.waitUntil(self.registration.showNotification(title, {
    body: body,
    // One notification per conversation: a newer one replaces it instead of stacking.
    tag: note.conversation_id ? "conversation-" + note.conversation_id : "switchboard",
    renotify: true,
    data: {conversationId: note.conversation_id || null},
  }));
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var id = event.notification.data && event.notification.data.conversationId;
  var target = new URL(id ? "/?conversation=" + id : "/", self.location.origin).href;
  event.waitUntil(self.clients.matchAll({type: "window", includeUncontrolled: true})
    .then(function (windows) {
      for (var i = 0; i < windows.length; i++) {
        if (new URL(windows[i].url).origin === self.location.origin && "focus" in windows[i]) {
          return windows[i].focus();
        }
      }
      return self.clients.openWindow(target);
    }));
});
