/* pushgate: where this browser keeps its sign-in, shared by the page (app.js) and the service worker
 * (sw.js, through importScripts). A service worker has no localStorage, so the user token and the id of
 * this browser's device live in IndexedDB: database "pushgate", object store "settings", key
 * "credentials" = {token, device_id, device_name}. Signing out deletes the record.
 */
'use strict';

self.pushgateStore = (() => {
  const DB_NAME = 'pushgate';
  const DB_VERSION = 1;
  const SETTINGS = 'settings';
  const CREDENTIALS = 'credentials';

  function request(req) {
    return new Promise((resolve, reject) => {
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }

  function open() {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => req.result.createObjectStore(SETTINGS);
    return request(req);
  }

  async function run(mode, work) {
    const db = await open();
    try {
      const tx = db.transaction(SETTINGS, mode);
      const result = await request(work(tx.objectStore(SETTINGS)));
      await new Promise((resolve, reject) => {
        tx.oncomplete = resolve;
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error);
      });
      return result;
    } finally {
      db.close();
    }
  }

  return {
    /** {token, device_id, device_name} or null when this browser is not signed in. */
    credentials: async () => (await run('readonly', (s) => s.get(CREDENTIALS))) || null,
    saveCredentials: (credentials) => run('readwrite', (s) => s.put(credentials, CREDENTIALS)),
    forget: () => run('readwrite', (s) => s.delete(CREDENTIALS)),
  };
})();
