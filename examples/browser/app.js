// The page's script (plain ES module, no build step). Each button opens one WebSocket through the gateway,
// sends one message, closes once the echo is back, and shows how the connection ended: the close code and
// reason are what page JavaScript gets, so this is also what an application can react to.
// `window.portcullisDemo.results` holds the same facts for scripts (and the browser tests).

const params = new URLSearchParams(location.search);
// The gateway: this page's own server unless ?gateway=ws://host:port says otherwise (the other-origin copy).
const gateway = params.get('gateway') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
const $ = (id) => document.getElementById(id);

/** `{ subject, token, badToken }` once logged in. */
let login = null;
const results = [];
window.portcullisDemo = { gateway, results, logIn, connect };

$('origin').textContent = location.origin;
$('gateway').textContent = gateway;

// What each button opens: a route, and the subprotocols offered (the token rides in one of them).
const KINDS = {
  token: { path: '/echo', label: 'token in Sec-WebSocket-Protocol', protocols: () => ['bearer', `bearer.${login.token}`] },
  'bad-token': { path: '/echo', label: 'bad token, rejectMode close', protocols: () => ['bearer', `bearer.${login.badToken}`] },
  'bad-token-http': { path: '/echo-http', label: 'bad token, rejectMode http', protocols: () => ['bearer', `bearer.${login.badToken}`] },
  session: { path: '/session', label: 'cookie session' },
};

/** POST /login: a JWT for this page, and the session cookie (set by the browser, unreadable here). */
async function logIn() {
  try {
    const res = await fetch('/login', { method: 'POST' });
    if (!res.ok) throw new Error(`POST /login answered ${res.status}`);
    login = await res.json();
    $('login-state').textContent = `Logged in as ${login.subject}: a token in memory, a session cookie in the browser.`;
    $('login-state').dataset.state = 'logged-in';
  } catch (err) {
    $('login-state').textContent = `Login failed (${err.message}). On the other-origin page, log in on the gateway's own page first.`;
    $('login-state').dataset.state = 'failed';
  }
  return login;
}

/** Opens one connection of `kind`; resolves its result once it has closed. */
function connect(kind) {
  const spec = KINDS[kind];
  const result = { id: results.length, kind, path: spec.path, state: 'connecting', opened: false, protocol: null, sent: null, messages: [], error: false, close: null };
  results.push(result);
  const item = document.createElement('li');
  item.dataset.id = String(result.id);
  item.dataset.kind = kind;
  $('log').prepend(item);
  const render = () => {
    item.dataset.state = result.state;
    if (result.close) item.dataset.outcome = result.opened && result.messages.includes(result.sent) ? 'accepted' : 'refused';
    const lines = [`#${result.id} ${spec.label}: ${gateway}${spec.path}`];
    if (result.opened) lines.push(`open, subprotocol ${JSON.stringify(result.protocol)}; sent ${JSON.stringify(result.sent)}`);
    for (const message of result.messages) lines.push(`received ${message}`);
    if (result.error) lines.push('error event');
    if (result.close) lines.push(`closed: code ${result.close.code}, reason ${JSON.stringify(result.close.reason)}, wasClean ${result.close.wasClean}`);
    if (result.state === 'not sent') lines.push('log in first: the token comes from POST /login');
    item.textContent = lines.join('\n');
  };
  render();
  if (spec.protocols && !login) {
    result.state = 'not sent';
    render();
    return Promise.resolve(result);
  }

  return new Promise((resolve) => {
    const url = gateway + spec.path;
    const ws = spec.protocols ? new WebSocket(url, spec.protocols()) : new WebSocket(url);
    ws.onopen = () => {
      result.opened = true;
      result.state = 'open';
      result.protocol = ws.protocol;
      result.sent = `hello from ${location.origin} (${kind})`;
      ws.send(result.sent);
      render();
    };
    ws.onmessage = (event) => {
      result.messages.push(String(event.data));
      // The upstream may greet first; our own message coming back is the echo we wait for.
      if (event.data === result.sent) ws.close(1000, 'done');
      render();
    };
    ws.onerror = () => {
      result.error = true;
      render();
    };
    ws.onclose = (event) => {
      result.state = 'closed';
      result.close = { code: event.code, reason: event.reason, wasClean: event.wasClean };
      render();
      resolve(result);
    };
  });
}

$('login').addEventListener('click', () => void logIn());
for (const kind of Object.keys(KINDS)) $(`connect-${kind}`).addEventListener('click', () => void connect(kind));
document.body.dataset.ready = 'true';
