/* pushgate: the "Enable notifications in this browser" page at /app/.
 *
 * Sign in: the user token is checked with GET /api/devices, the service worker /app/sw.js is registered
 * (scope /app/), and the token is kept in IndexedDB (store.js), where the worker reads it to report taps.
 * Enable: ask for permission, fetch the VAPID key (GET /api/webpush/vapid-public-key), subscribe with the
 * PushManager and register the subscription as a web device (POST /api/devices).
 * Sign out: unsubscribe, delete the device, forget the token.
 */
'use strict';

const store = self.pushgateStore;
const $ = (id) => document.getElementById(id);

function say(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

async function api(method, path, token, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit',
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(answer.message || answer.error || `${method} ${path} answered ${response.status}`);
  }
  return answer;
}

function base64urlToBytes(text) {
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
  const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

function defaultName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chrome' : 'Browser';
  const system = /Android/.test(ua) ? 'Android' : /Windows/.test(ua) ? 'Windows' : /Mac OS X/.test(ua) ? 'macOS' : /Linux/.test(ua) ? 'Linux' : '';
  return system ? `${browser} on ${system}` : browser;
}

function show(credentials) {
  $('signin').hidden = Boolean(credentials);
  $('enable').hidden = !credentials;
  if (credentials) $('shown-name').textContent = credentials.device_name;
}

async function signIn(event) {
  event.preventDefault();
  const token = $('token').value.trim();
  const deviceName = $('device-name').value.trim() || defaultName();
  try {
    await api('GET', '/api/devices', token); // 401 for anything but a valid user token
    await navigator.serviceWorker.register('/app/sw.js', { scope: '/app/' });
    const credentials = { token, device_id: null, device_name: deviceName };
    await store.saveCredentials(credentials);
    $('token').value = '';
    show(credentials);
    say('Signed in. Now enable notifications.');
  } catch (error) {
    say(`Could not sign in: ${error.message}`, true);
  }
}

async function enable() {
  try {
    const credentials = await store.credentials();
    if (!credentials) throw new Error('sign in first');
    if ((await Notification.requestPermission()) !== 'granted') {
      throw new Error('notifications are blocked for this site; allow them in the browser settings');
    }
    const registration = await navigator.serviceWorker.register('/app/sw.js', { scope: '/app/' });
    await navigator.serviceWorker.ready;
    const keyAnswer = await fetch('/api/webpush/vapid-public-key', { credentials: 'omit' });
    if (!keyAnswer.ok) throw new Error(`the gateway has no Web Push key (${keyAnswer.status})`);
    const key = base64urlToBytes((await keyAnswer.json()).public_key);
    let subscription = await registration.pushManager.getSubscription();
    const current = subscription && subscription.options.applicationServerKey;
    if (current && !new Uint8Array(current).every((byte, i) => byte === key[i])) {
      await subscription.unsubscribe(); // made for another gateway key: it cannot receive our pushes
      subscription = null;
    }
    subscription ||= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    const device = await api('POST', '/api/devices', credentials.token, {
      platform: 'web',
      subscription: subscription.toJSON(),
      device_name: credentials.device_name,
    });
    await store.saveCredentials({ ...credentials, device_id: device.id });
    say(`Notifications are on for this browser (${device.token_hint}).`);
  } catch (error) {
    say(`Could not enable notifications: ${error.message}`, true);
  }
}

async function signOut() {
  const credentials = await store.credentials();
  try {
    const registration = await navigator.serviceWorker.getRegistration('/app/');
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (subscription) await subscription.unsubscribe();
    if (credentials && credentials.device_id) {
      await api('DELETE', `/api/devices/${encodeURIComponent(credentials.device_id)}`, credentials.token);
    }
    say('Signed out; this browser gets no more notifications.');
  } catch (error) {
    say(`Signed out here, but the device could not be removed: ${error.message}`, true);
  } finally {
    await store.forget();
    show(null);
  }
}

async function start() {
  if (!('serviceWorker' in navigator) || !('PushManager' in self) || !('indexedDB' in self)) {
    say('This browser cannot receive Web Push notifications (or this page is not served over https).', true);
    $('signin-button').disabled = true;
    return;
  }
  $('signin-form').addEventListener('submit', signIn);
  $('enable-button').addEventListener('click', enable);
  $('signout-button').addEventListener('click', signOut);
  show(await store.credentials());
  document.body.dataset.ready = 'true';
}

start();
