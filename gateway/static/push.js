/*
 * Switchboard Web Push for the browser: subscribe this browser to push notifications.
 *
 *   <script src="/static/push.js"></script>
 *   // From a click handler, after sign-in (browsers ask permission only on a gesture):
 *   const result = await SwitchboardPush.enable({token, label: "Demo in Firefox"});
 *   //   {ok: true, device}  or  {ok: false, reason: "unsupported" | "insecure" |
 *   //                             "denied" | "default" | "error", error?}
 *   await SwitchboardPush.status({token});   // {supported, permission, subscribed, deviceId}
 *   await SwitchboardPush.disable({token});  // at sign-out: unsubscribe + DELETE the device
 *
 * enable() registers the service worker (/static/sw.js, which shows the notifications),
 * asks for permission, subscribes with the server's VAPID key
 * (GET /v1/push/vapid-public-key) and registers the subscription (POST /v1/devices).
 * Calling it again is harmless: the same subscription updates the same device. If the
 * server's key changed, the old subscription is replaced. Options: token (required),
 * baseUrl (default: this origin), label, serviceWorkerUrl.
 * Needs a secure context: https, or http://localhost.
 */
(function (global) {
  "use strict";

  var DEVICE_KEY = "switchboard.push.device";

  function supported() {
    return "serviceWorker" in navigator && "PushManager" in global && "Notification" in global;
  }

  function keyBytes(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4))
      .replace(/-/g, "+").replace(/_/g, "/");
    var raw = atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function sameKey(subscription, bytes) {
    var current = subscription.options && subscription.options.applicationServerKey;
    if (!current) return true; // the browser does not say: keep it
    current = new Uint8Array(current);
    if (current.length !== bytes.length) return false;
    for (var i = 0; i < bytes.length; i++) if (current[i] !== bytes[i]) return false;
    return true;
  }

  async function api(options, method, path, body) {
    var response = await fetch((options.baseUrl || "") + path, {
      method: method,
      headers: Object.assign({"Authorization": "Bearer " + options.token},
                             body ? {"Content-Type": "application/json"} : {}),
      body: body ? JSON.stringify(body) : undefined,
    });
    var data = response.status === 204 ? null : await response.json();
    if (!response.ok) {
      var error = new Error((data && data.error && data.error.message) || response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  async function registration(options) {
    var url = options.serviceWorkerUrl || "/static/sw.js";
    await navigator.serviceWorker.register(url);
    return navigator.serviceWorker.ready;
  }

  async function enable(options) {
    if (!supported()) return {ok: false, reason: "unsupported"};
    if (!global.isSecureContext) return {ok: false, reason: "insecure"};
    try {
      var permission = await Notification.requestPermission();
      if (permission !== "granted") return {ok: false, reason: permission};
      var reg = await registration(options);
      var key = keyBytes((await api(options, "GET", "/v1/push/vapid-public-key")).public_key);
      var subscription = await reg.pushManager.getSubscription();
      if (subscription && !sameKey(subscription, key)) {
        await subscription.unsubscribe(); // made for another server key: useless now
        subscription = null;
      }
      if (!subscription) {
        subscription = await reg.pushManager.subscribe({userVisibleOnly: true,
                                                        applicationServerKey: key});
      }
      var device = await api(options, "POST", "/v1/devices", {
        kind: "webpush", subscription: subscription.toJSON(),
        label: (options.label || navigator.userAgent).slice(0, 64),
      });
      try { localStorage.setItem(DEVICE_KEY, String(device.id)); } catch (e) { /* private mode */ }
      return {ok: true, device: device};
    } catch (error) {
      return {ok: false, reason: "error", error: error};
    }
  }

  async function disable(options) {
    var deviceId = null;
    try { deviceId = localStorage.getItem(DEVICE_KEY); } catch (e) { /* private mode */ }
    if (deviceId && options && options.token) {
      try {
        await api(options, "DELETE", "/v1/devices/" + encodeURIComponent(deviceId));
      } catch (error) {
        if (error.status !== 404) throw error;
      }
    }
    try { localStorage.removeItem(DEVICE_KEY); } catch (e) { /* private mode */ }
    if (supported()) {
      var reg = await navigator.serviceWorker.getRegistration(
        (options && options.serviceWorkerUrl) || "/static/sw.js");
      var subscription = reg && await reg.pushManager.getSubscription();
      if (subscription) await subscription.unsubscribe();
    }
    return {ok: true};
  }

  async function status(options) {
    var result = {supported: supported(), permission: "default", subscribed: false,
                  deviceId: null};
    if (!result.supported) return result;
    result.permission = Notification.permission;
    var reg = await navigator.serviceWorker.getRegistration(
      (options && options.serviceWorkerUrl) || "/static/sw.js");
    result.subscribed = !!(reg && await reg.pushManager.getSubscription());
    try { result.deviceId = localStorage.getItem(DEVICE_KEY); } catch (e) { /* private mode */ }
    return result;
  }

  global.SwitchboardPush = {enable: enable, disable: disable, status: status,
                            supported: supported};
})(typeof window !== "undefined" ? window : self);
