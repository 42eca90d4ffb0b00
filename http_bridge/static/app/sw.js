/* pushgate service worker: shows Web Push notifications and reports what the user did with them.
 *
 * Served by the bridge at /app/sw.js (text/javascript), so its default scope /app/ covers the dashboard
 * pages under /app/ without a Service-Worker-Allowed header. Push events do not depend on the scope; it
 * only says which pages the worker controls.
 *
 * - push: the payload is the JSON the Web Push channel encrypts (id, receipt_id, topic, title, message,
 *   priority, tags, click_url, icon, actions). It becomes a notification tagged with the message id, so a
 *   message delivered twice (delivery is at least once) replaces itself instead of showing twice.
 * - notificationclick on an action button: POST /api/action {message_id, action_id, reply_text,
 *   device_id}; a "reply" action sends Chrome's inline reply (event.reply) as reply_text, a "url" action
 *   also opens its url. A click on the body opens click_url (or the dashboard) and marks the message read
 *   with POST /api/read.
 * - Closing (swiping away) a notification reports nothing: dismissing is not reading.
 * - pushsubscriptionchange: the browser replaced the subscription; the new one is registered as this
 *   browser's device so pushes keep arriving.
 *
 * Reports carry the signed-in user's token (Authorization: Bearer), read from IndexedDB (store.js).
 * A report that meets a network error, a 429 or a 5xx is retried with backoff for about half a minute;
 * a 4xx is final (the token was revoked, the message deleted) and only logged.
 */
'use strict';

importScripts('/app/store.js');

const DASHBOARD = '/app/';
const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 16000];
const QUIET = new Set(['lowest', 'low']);

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  const shown = showPush(event.data);
  event.waitUntil(shown);
});

self.addEventListener('notificationclick', (event) => {
  // The work starts before waitUntil, so it runs however the event was dispatched.
  const handled = onClick(event.notification, event.action, event.reply);
  event.notification.close();
  event.waitUntil(handled);
});

self.addEventListener('pushsubscriptionchange', (event) => {
  event.waitUntil(resubscribe(event.oldSubscription, event.newSubscription));
});

function parsePayload(data) {
  if (!data) return { message: '' };
  try {
    const payload = data.json();
    if (payload && typeof payload === 'object' && !Array.isArray(payload)) return payload;
  } catch (_) {
    // not JSON: show the text itself (Chrome demands a notification for every push)
  }
  return { message: data.text() };
}

function notificationActions(actions) {
  const max = self.Notification && Notification.maxActions ? Notification.maxActions : 2;
  return actions.slice(0, max).map((action) => {
    const shown = { action: String(action.id), title: String(action.label || action.id) };
    if (action.type === 'reply') {
      shown.type = 'text';
      shown.placeholder = String(action.label || 'Reply');
    }
    return shown;
  });
}

async function showPush(data) {
  const payload = parsePayload(data);
  const actions = Array.isArray(payload.actions) ? payload.actions.filter((a) => a && a.id) : [];
  const title = payload.title || payload.topic || 'pushgate';
  const options = {
    body: typeof payload.message === 'string' ? payload.message : '',
    tag: payload.id || undefined,
    data: {
      id: payload.id || null,
      receipt_id: payload.receipt_id || null,
      topic: payload.topic || null,
      click_url: payload.click_url || null,
      actions,
    },
    actions: notificationActions(actions),
    requireInteraction: payload.priority === 'urgent',
    silent: QUIET.has(payload.priority),
  };
  if (payload.icon) options.icon = payload.icon;
  await self.registration.showNotification(title, options);
}

async function onClick(notification, actionId, reply) {
  const data = notification.data || {};
  if (!data.id) return openWindow(data.click_url || DASHBOARD);
  if (!actionId) {
    await Promise.allSettled([openWindow(data.click_url || DASHBOARD), report('/api/read', { message_id: data.id })]);
    return;
  }
  const action = (data.actions || []).find((a) => a.id === actionId) || { id: actionId };
  const body = { message_id: data.id, action_id: actionId };
  if (action.type === 'reply' && reply) body.reply_text = reply;
  const work = [report('/api/action', body)];
  if (action.type === 'url' && action.url) work.push(openWindow(action.url));
  await Promise.allSettled(work);
}

async function openWindow(url) {
  const target = new URL(url, self.location.origin).href;
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const open = windows.find((client) => client.url === target);
  if (open && 'focus' in open) return open.focus();
  return self.clients.openWindow(target);
}

/** POST a report with the signed-in user's token; retried while the gateway is unreachable or busy. */
async function report(path, fields) {
  const credentials = await self.pushgateStore.credentials();
  if (!credentials || !credentials.token) {
    console.warn('pushgate: not signed in on this browser; %s not reported', path);
    return;
  }
  let body = { ...fields };
  if (credentials.device_id) body.device_id = credentials.device_id;
  for (let attempt = 0; ; attempt += 1) {
    let response = null;
    try {
      response = await fetch(path, {
        method: 'POST',
        headers: { Authorization: `Bearer ${credentials.token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        credentials: 'omit',
      });
    } catch (error) {
      console.warn('pushgate: %s failed: %s', path, error);
    }
    if (response && response.ok) return;
    if (response && response.status === 400 && body.device_id) {
      // this browser's device was deleted: the report still counts, without naming the device
      const problem = await response.json().catch(() => ({}));
      if (problem.field === 'device_id') {
        const { device_id: _gone, ...rest } = body;
        body = rest;
        continue;
      }
    }
    const retryable = !response || response.status === 429 || response.status >= 500;
    if (!retryable || attempt >= RETRY_DELAYS_MS.length) {
      console.warn('pushgate: %s answered %s; giving up', path, response ? response.status : 'nothing');
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_DELAYS_MS[attempt]));
  }
}

async function resubscribe(oldSubscription, newSubscription) {
  const credentials = await self.pushgateStore.credentials();
  if (!credentials || !credentials.token) return;
  let subscription = newSubscription;
  if (!subscription && oldSubscription && oldSubscription.options) {
    subscription = await self.registration.pushManager.subscribe(oldSubscription.options);
  }
  if (!subscription) return;
  const response = await fetch('/api/devices', {
    method: 'POST',
    headers: { Authorization: `Bearer ${credentials.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      platform: 'web',
      subscription: subscription.toJSON(),
      device_name: credentials.device_name || '',
    }),
    credentials: 'omit',
  });
  if (!response.ok) return;
  const device = await response.json();
  if (credentials.device_id && credentials.device_id !== device.id) {
    await fetch(`/api/devices/${encodeURIComponent(credentials.device_id)}`, {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${credentials.token}` },
      credentials: 'omit',
    }).catch(() => undefined);
  }
  await self.pushgateStore.saveCredentials({ ...credentials, device_id: device.id });
}
