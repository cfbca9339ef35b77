// Node.js tls ATLS interop peer (interop/CONTRACT.md): a tls.TLSSocket runs
// over an in-memory Duplex whose bytes travel in HTTP POST bodies.
import { Duplex } from 'node:stream';
import fs from 'node:fs';
import path from 'node:path';
import http from 'node:http';
import tls from 'node:tls';
import crypto from 'node:crypto';

const EXPORTER_LABEL = 'application-layer-tls';
const EXPORT_LENGTH = 32;
const CHACHA = 'TLS_CHACHA20_POLY1305_SHA256';
const MAX_BODY = 256 * 1024;
const INNER_REQUEST = 'GET /api/hello HTTP/1.1\r\nHost: atls\r\nContent-Length: 0\r\n\r\n';
const INNER_RESPONSE = 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\nhello from node';

const TESTCASES = {
  'handshake-tls13': { min: 'TLSv1.3', max: 'TLSv1.3' },
  'handshake-tls12': { min: 'TLSv1.2', max: 'TLSv1.2' },
  'records': { records: true },
  'exporter': { min: 'TLSv1.3', max: 'TLSv1.3' },
  'exporter-empty-context': { min: 'TLSv1.2', max: 'TLSv1.2', emptyContext: true },
  'mutual-auth-missing': {},
  'wrong-anchor': {},
  'draft00': { draft00: true },
  'proxy': {},
  'flight-loss': {},
  'corruption': {},
  'chacha20': { min: 'TLSv1.3', max: 'TLSv1.3', chacha: true },
  'dtls12': { unsupported: 'Node tls has no DTLS (no datagram TLS API in node:tls)' },
};

const role = process.env.ROLE;
const log = (msg) => process.stderr.write(`atls-node ${role}: ${msg}\n`);

// MemoryDuplex is the TLS socket's transport: what TLS writes collects for the
// next carrier body; carrier bodies are pushed in as what TLS reads.
class MemoryDuplex extends Duplex {
  constructor() {
    super();
    this.out = [];
    this.writes = 0; // counts writes so settle() can tell when TLS went quiet
  }
  _write(chunk, _encoding, callback) {
    this.out.push(Buffer.from(chunk));
    this.writes++;
    callback();
  }
  _read() {}
  takeOut() {
    const b = Buffer.concat(this.out);
    this.out = [];
    return b;
  }
}

// Node runs TLS on this thread but hands bytes between the stream and TLS in
// later ticks (nextTick/setImmediate): wait until several turns of the event
// loop pass without TLS writing anything.
function settle(duplex) {
  return new Promise((resolve) => {
    let last = duplex.writes, quiet = 0, turns = 0;
    const step = () => {
      if (duplex.writes === last) quiet++;
      else { quiet = 0; last = duplex.writes; }
      if (quiet >= 4 || ++turns > 500) setTimeout(resolve, 1);
      else setImmediate(step);
    };
    setImmediate(step);
  });
}

function config(name) {
  const tc = TESTCASES[name];
  if (!tc) return null;
  return { min: 'TLSv1.2', max: 'TLSv1.3', ...tc };
}

function readCerts() {
  const dir = process.env.CERTS;
  if (!dir) throw new Error('CERTS is not set');
  const file = (n) => path.join(dir, n);
  const certs = { ca: fs.readFileSync(file('ca.pem')) };
  if (fs.existsSync(file('cert.pem'))) {
    certs.cert = fs.readFileSync(file('cert.pem'));
    certs.key = fs.readFileSync(file('key.pem'));
  }
  if (fs.existsSync(file('server-name'))) certs.serverName = fs.readFileSync(file('server-name'), 'utf8').trim();
  return certs;
}

function tlsOptions(tc, certs) {
  const o = { ca: certs.ca, minVersion: tc.min, maxVersion: tc.max };
  if (certs.cert) { o.cert = certs.cert; o.key = certs.key; }
  // Node takes TLS 1.3 suites (TLS_*) in the same 'ciphers' string as 1.2 ones
  if (tc.chacha) o.ciphers = CHACHA;
  return o;
}

function keylogAppender() {
  const file = process.env.KEYLOG_FILE;
  return file ? (line) => fs.appendFileSync(file, line) : null;
}

function writeExport(socket, tc) {
  const file = process.env.EXPORT_FILE;
  if (!file) return;
  // undefined context = absent; a zero-length Buffer = present but empty
  const context = tc.emptyContext ? Buffer.alloc(0) : undefined;
  const ekm = socket.exportKeyingMaterial(EXPORT_LENGTH, EXPORTER_LABEL, context);
  fs.writeFileSync(file + '.tmp', ekm.toString('hex') + '\n');
  fs.renameSync(file + '.tmp', file); // a retried handshake overwrites atomically
}

const carrierPath = (tc) => (tc.draft00 ? '/atls' : '/.well-known/atls');
const mediaType = (tc) => (tc.draft00 ? 'application/atls+octet-stream' : 'application/atls');
const bareMediaType = (v) => String(v || '').split(';')[0].trim().toLowerCase();

// ---------------------------------------------------------------------------
// client

class CarrierError extends Error {} // the only failure a client retries

function post(session, body) {
  const { tc, target, proxy, deadline } = session;
  const timeout = Math.min(5000, deadline - Date.now());
  if (timeout <= 0) return Promise.reject(new Error('out of time (20 s budget)'));
  const headers = {
    'Content-Type': mediaType(tc),
    'Accept': mediaType(tc),
    'Content-Length': body.length,
    'Host': target.host,
  };
  if (session.cookie) headers.Cookie = `atls_session=${session.cookie}`;
  const url = new URL(carrierPath(tc), target);
  // through a forward proxy: connect to it and send the absolute-form target
  const via = proxy || url;
  const options = {
    method: 'POST', host: via.hostname, port: via.port || 80,
    path: proxy ? url.href : url.pathname, headers, timeout,
  };
  return new Promise((resolve, reject) => {
    const req = http.request(options, (res) => {
      const chunks = [];
      let size = 0;
      res.on('data', (c) => {
        size += c.length;
        if (size > MAX_BODY) { req.destroy(new Error('answer too large')); return; }
        chunks.push(c);
      });
      res.on('error', (e) => reject(new CarrierError(e.message)));
      res.on('end', () => {
        const data = Buffer.concat(chunks);
        for (const c of [].concat(res.headers['set-cookie'] || [])) {
          const m = /^\s*atls_session=([^;]*)/.exec(c);
          if (m) session.cookie = m[1];
        }
        const status = res.statusCode;
        if (status === 200 && bareMediaType(res.headers['content-type']) === mediaType(tc)) resolve(data);
        else if (status === 200) reject(new Error(`200 with Content-Type ${res.headers['content-type']}`));
        else if ([502, 503, 504].includes(status)) reject(new CarrierError(`HTTP ${status}`));
        else reject(new Error(`refused: HTTP ${status} ${res.headers['content-type']}: ${data.toString("utf8", 0, 300).trim()}`));
      });
    });
    req.on('timeout', () => req.destroy(new CarrierError('no answer in time')));
    req.on('error', (e) => reject(e instanceof CarrierError ? e : new CarrierError(e.message)));
    req.end(body);
  });
}

async function clientAttempt(session) {
  const { tc, certs } = session;
  const duplex = new MemoryDuplex();
  let tlsError = null;
  let secure = false;
  const socket = tls.connect({
    ...tlsOptions(tc, certs),
    socket: duplex,
    servername: certs.serverName,
    rejectUnauthorized: true,
  });
  socket.on('error', (e) => { tlsError = e; });
  socket.on('secureConnect', () => { secure = true; });
  const keylog = keylogAppender();
  if (keylog) socket.on('keylog', keylog);
  const plain = [];
  socket.on('data', (d) => plain.push(d));
  try {
    let out = (await settle(duplex), duplex.takeOut());
    while (!secure) {
      if (tlsError) throw new Error(`TLS handshake: ${tlsError.message}`);
      if (out.length === 0) throw new Error('handshake stalled: TLS waits for data but has nothing to send');
      const answer = await post(session, out);
      if (answer.length === 0) throw new Error('the server answered a handshake flight with an empty body');
      duplex.push(answer);
      await settle(duplex);
      out = duplex.takeOut();
    }
    if (tlsError) throw new Error(`TLS handshake: ${tlsError.message}`);
    // TLS 1.3: our Finished is still to go; the server accepts it (tickets or
    // an empty body) or refuses it (e.g. certificate_required)
    if (out.length > 0) {
      duplex.push(await post(session, out));
      await settle(duplex);
      if (tlsError) throw new Error(`TLS: ${tlsError.message}`);
    }
    writeExport(socket, tc);
    const version = socket.getProtocol();
    console.log(`handshake ok: ${version} ${socket.getCipher().standardName}`);
    if (!tc.records) return;
    plain.length = 0;
    socket.write(INNER_REQUEST);
    await settle(duplex);
    duplex.push(await post(session, duplex.takeOut()));
    await settle(duplex);
    if (tlsError) throw new Error(`TLS: ${tlsError.message}`);
    const text = Buffer.concat(plain).toString('latin1');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
    if (!m) throw new Error(`inner response is not HTTP/1.1: ${JSON.stringify(text.slice(0, 100))}`);
    console.log(`inner response: ${text.split('\r\n')[0]} ${JSON.stringify(text.split('\r\n\r\n')[1] || '')}`);
    if (m[1] !== '200') throw new Error(`inner status ${m[1]}`);
  } finally {
    socket.destroy();
  }
}

async function runClient(tc) {
  if (tc.unsupported) { console.error(tc.unsupported); return 127; }
  const certs = readCerts();
  if (!process.env.SERVER_URL) throw new Error('SERVER_URL is not set');
  const session0 = {
    tc, certs,
    target: new URL(process.env.SERVER_URL),
    proxy: process.env.PROXY ? new URL(process.env.PROXY) : null,
    deadline: Date.now() + 18000, // the contract allows 20 s; keep a margin
  };
  for (let attempt = 0; ; attempt++) {
    const session = { ...session0, cookie: null }; // fresh handshake, no cookie
    try {
      await clientAttempt(session);
      return 0;
    } catch (e) {
      if (e instanceof CarrierError && attempt < 2 && Date.now() < session0.deadline) {
        log(`attempt ${attempt + 1}: carrier: ${e.message}; starting a fresh handshake`);
        continue;
      }
      log(`failed: ${e instanceof CarrierError ? 'carrier: ' : ''}${e.message}`);
      return 1;
    }
  }
}

// ---------------------------------------------------------------------------
// server

const MAX_SESSIONS = 512;
const IDLE_MS = 60000;

function problem(res, status, slug, title, detail, extra = {}) {
  const body = JSON.stringify({ type: `urn:atls-testbed:problem:${slug}`, title, status, detail, ...extra });
  res.writeHead(status, { 'Content-Type': 'application/problem+json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > limit) { // stop buffering, discard the rest, answer 413
        req.removeAllListeners('data');
        req.resume();
        reject(new Error(`body larger than ${limit} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function runServer(tc) {
  if (tc.unsupported) { console.error(tc.unsupported); return Promise.resolve(127); }
  const certs = readCerts();
  if (!certs.cert) throw new Error('CERTS has no cert.pem for the server');
  const serverOptions = {
    ...tlsOptions(tc, certs),
    requestCert: true, rejectUnauthorized: true, // every test case is mutual
    handshakeTimeout: 15000,
  };
  const keylog = keylogAppender();
  const sessions = new Map();

  // Each session gets a tls.Server that never listens: its Duplex is handed
  // over as a 'connection', so the server wraps it in a server TLSSocket with
  // the server's checks (e.g. reject an unverified client certificate) and
  // reports that socket's events back to this one session.
  function newSession() {
    const duplex = new MemoryDuplex();
    const s = { token: crypto.randomBytes(16).toString('hex'), duplex, secure: false, error: null, socket: null, used: Date.now(), busy: null };
    const tlsServer = tls.createServer(serverOptions);
    if (keylog) tlsServer.on('keylog', (line) => keylog(line));
    tlsServer.on('tlsClientError', (err, socket) => {
      s.socket = socket;
      if (!s.error) s.error = err;
    });
    tlsServer.on('secureConnection', (socket) => onSecure(s, socket));
    tlsServer.emit('connection', duplex);
    return s;
  }

  function onSecure(s, socket) {
    s.secure = true;
    s.socket = socket;
    socket.on('error', (e) => { if (!s.error) s.error = e; });
    try { writeExport(socket, tc); } catch (e) { log(`export: ${e.message}`); }
    log(`handshake ok: ${socket.getProtocol()} ${socket.getCipher().standardName}`);
    // records mode: answer each inner request with a fixed response
    let pending = '';
    socket.on('data', (d) => {
      pending += d.toString('latin1');
      if (pending.length > 65536) return socket.destroy(new Error('inner request too large'));
      let end;
      while ((end = pending.indexOf('\r\n\r\n')) >= 0) {
        const head = pending.slice(0, end);
        const len = Number((/\r\ncontent-length:\s*(\d+)/i.exec(head) || [0, 0])[1]);
        if (pending.length < end + 4 + len) break;
        pending = pending.slice(end + 4 + len);
        log(`inner request: ${head.split('\r\n')[0]}`);
        socket.write(INNER_RESPONSE);
      }
    });
  }

  async function exchange(s, body) {
    s.used = Date.now();
    s.duplex.push(body);
    await settle(s.duplex);
    const out = s.duplex.takeOut();
    const err = s.error || (s.duplex.destroyed ? new Error('the TLS session ended') : null);
    return { out, err };
  }

  const server = http.createServer({ requestTimeout: 10000, headersTimeout: 5000, maxHeaderSize: 16384 }, async (req, res) => {
    try {
      const url = new URL(req.url, 'http://x');
      if (url.pathname !== '/.well-known/atls' && url.pathname !== '/atls') return problem(res, 404, 'not-found', 'Not Found', 'no such resource');
      if (req.method !== 'POST') return problem(res, 405, 'method-not-allowed', 'Method Not Allowed', 'ATLS messages are POSTs');
      const media = bareMediaType(req.headers['content-type']);
      if (media !== 'application/atls' && media !== 'application/atls+octet-stream') {
        return problem(res, 415, 'unsupported-media-type', 'Unsupported Media Type', 'expected application/atls');
      }
      let body;
      try { body = await readBody(req, 65536); } catch (e) { return problem(res, 413, 'flight-too-large', 'Flight Too Large', e.message); }
      const m = /(?:^|;\s*)atls_session=([^;]*)/.exec(req.headers.cookie || '');
      let s, isNew = false;
      if (m) {
        s = sessions.get(m[1]);
        if (!s) return problem(res, 400, 'session', 'No Such Session', 'unknown or expired atls_session');
      } else {
        if (body.length === 0) return problem(res, 400, 'session', 'No ClientHello', 'a POST without the session cookie must carry a ClientHello');
        if (sessions.size >= MAX_SESSIONS) return problem(res, 503, 'session', 'Too Many Sessions', 'try again later');
        s = newSession();
        sessions.set(s.token, s);
        isNew = true;
      }
      // one message at a time per session
      while (s.busy) await s.busy;
      let release;
      s.busy = new Promise((r) => { release = r; });
      let result;
      try { result = await exchange(s, body); } finally { s.busy = null; release(); }
      if (result.err) {
        sessions.delete(s.token);
        s.socket?.destroy();
        s.duplex.destroy();
        log(`session ${s.token.slice(0, 8)}: ${result.err.message}`);
        const extra = {};
        const alert = /alert ([a-z ]+)/i.exec(result.err.message) || /SSL alert number (\d+)/.exec(result.err.message);
        if (result.err.code) extra.tls_error = result.err.code;
        if (alert) extra.tls_alert = alert[1].trim().replace(/ /g, '_');
        if (result.out.length) extra.tls_flight = result.out.toString('base64');
        return problem(res, 400, 'tls-alert', 'TLS rejected the flight', result.err.message, extra);
      }
      const headers = { 'Content-Type': media, 'Content-Length': result.out.length };
      if (isNew) headers['Set-Cookie'] = `atls_session=${s.token}; Path=/`;
      res.writeHead(200, headers);
      res.end(result.out);
    } catch (e) {
      log(`handler: ${e.stack || e}`);
      if (!res.headersSent) problem(res, 500, 'internal', 'Internal Error', String(e.message || e));
    }
  });
  // end abandoned sessions
  setInterval(() => {
    for (const [token, s] of sessions) {
      if (Date.now() - s.used > IDLE_MS) { s.socket?.destroy(); s.duplex.destroy(); sessions.delete(token); }
    }
  }, 5000).unref();

  return new Promise((resolve) => {
    server.on('error', (e) => { log(`listen: ${e.message}`); resolve(1); });
    const host = process.env.HOST || '127.0.0.1';
    server.listen(Number(process.env.PORT), host, () => log(`listening on ${host}:${process.env.PORT} (${process.env.TESTCASE})`));
    const stop = () => { server.close(); server.closeAllConnections(); resolve(0); };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

// ---------------------------------------------------------------------------

async function main() {
  const tc = config(process.env.TESTCASE);
  if (!tc) { console.error(`test case ${JSON.stringify(process.env.TESTCASE)} is not implemented by the node peer`); return 127; }
  if (role === 'client') return runClient(tc);
  if (role === 'server') return runServer(tc);
  console.error(`ROLE must be client or server, not ${JSON.stringify(role)}`);
  return 1;
}

main().then((code) => process.exit(code), (e) => { log(e.message); process.exit(1); });
