'use strict';
// Code.js runs in a fresh vm context per test, with only the fakes as globals (no require, no
// process): exactly the names Apps Script would give it.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const os = require('node:os');
const { createFakes, fakeIdToken, ERROR_TYPES } = require('./fakes');
const configure = require('../tools/configure');

const ADDON_DIR = path.join(__dirname, '..');
const CODE = fs.readFileSync(path.join(ADDON_DIR, 'Code.js'), 'utf8');
/** The checked-in manifest: whatever backend `tools/configure.js` last wrote into it. */
const MANIFEST = JSON.parse(fs.readFileSync(path.join(ADDON_DIR, 'appsscript.json'), 'utf8'));
const TEMPLATE = JSON.parse(fs.readFileSync(path.join(ADDON_DIR, 'appsscript.template.json'), 'utf8'));

const API_KEY = 'sk-live-7f3c9a1e5d2b4c6a8e0f-SECRET';
const BASE = 'https://confsync.example.com';
const CONFIG = { CONFSYNC_BASE_URL: BASE, CONFSYNC_API_KEY: API_KEY };
const CAL = 'alice@example.com';
const EVENT = 'abc123def456';
/** The manifest configured for the tests' backend (independent of the checked-in one). */
const RENDERED = configure.renderManifest(TEMPLATE, { backend: `${BASE}/` });
const IDENTITY = fakeIdToken();
const IDENTITY_HEADER = 'X-Confsync-Identity';
const HEADERS = { Authorization: `Bearer ${API_KEY}`, [IDENTITY_HEADER]: IDENTITY };

/**
 * Loads Code.js into a new context; returns its exports and the fakes it sees. UrlFetchApp
 * allows only the rendered manifest's urlFetchWhitelist, as Apps Script would.
 */
function load(opts = {}) {
  const fakes = createFakes({ properties: CONFIG, urlFetchWhitelist: RENDERED.urlFetchWhitelist, ...opts });
  const sandbox = { ...fakes.globals, module: { exports: {} } };
  vm.runInNewContext(CODE, sandbox, { filename: 'Code.js' });
  return { api: sandbox.module.exports, sandbox, fakes };
}

function createArg(calendarId = CAL, eventId = EVENT, extra = {}) {
  return { eventData: { calendarId, eventId, ...extra } };
}

const FULL_ANSWER = {
  conferenceId: 'm-4711',
  conferenceSolution: { key: { type: 'addOn' }, name: 'confsync', iconUri: 'https://confsync.example.com/i.png' },
  entryPoints: [
    {
      entryPointType: 'video',
      uri: 'https://meet.example.com/j/4711',
      label: 'meet.example.com/j/4711',
      meetingCode: '4711',
      passcode: 'pc-1',
      password: 'pw-1',
      entryPointFeatures: ['hd'], // not in the contract: ignored
      somethingNew: 'ignored',
    },
    {
      entryPointType: 'phone',
      uri: 'tel:+49-30-1234567',
      label: '+49 30 1234567',
      pin: '998877',
      accessCode: '4711',
      regionCode: 'DE',
    },
    { entryPointType: 'sip', uri: 'sip:4711@sip.example.com', accessCode: 'ac-9', meetingCode: 'mc-9' },
    { entryPointType: 'more', uri: 'https://meet.example.com/more/4711' },
  ],
  parameters: { addOnParameters: { parameters: { meetingId: '4711', provider: 'local', revision: 3 } } },
  notes: 'Dial-in numbers are <b>toll</b>.',
};

const EXPECTED_DATA = {
  conferenceSolutionId: 'confsync',
  conferenceId: 'm-4711',
  notes: 'Dial-in numbers are <b>toll</b>.',
  entryPoints: [
    { entryPointType: 'VIDEO', uri: 'https://meet.example.com/j/4711', meetingCode: '4711', passcode: 'pc-1', password: 'pw-1' },
    { entryPointType: 'PHONE', uri: 'tel:+49-30-1234567', pin: '998877', accessCode: '4711', regionCode: 'DE' },
    { entryPointType: 'SIP', uri: 'sip:4711@sip.example.com', accessCode: 'ac-9', meetingCode: 'mc-9' },
    { entryPointType: 'MORE', uri: 'https://meet.example.com/more/4711' },
  ],
  conferenceParameters: [
    { key: 'meetingId', value: '4711' },
    { key: 'provider', value: 'local' },
    { key: 'revision', value: '3' },
  ],
};

function errorData(type, authenticationUrl) {
  const error = { conferenceErrorType: type };
  if (authenticationUrl) error.authenticationUrl = authenticationUrl;
  return { conferenceSolutionId: 'confsync', error };
}

// ---- manifest ----------------------------------------------------------------------------------

const GOOGLE = 'https://www.googleapis.com/auth/';

/** Both manifests the tests know: the checked-in one and one rendered for the tests' backend. */
const MANIFESTS = [['appsscript.json', MANIFEST], ['rendered for the tests', RENDERED]];

test('manifest declares the conference solution and V8; handlers exist in Code.js', () => {
  const { sandbox } = load();
  for (const [name, manifest] of MANIFESTS) {
    assert.equal(manifest.runtimeVersion, 'V8', name);
    assert.equal(typeof manifest.timeZone, 'string', name);
    assert.equal(manifest.addOns.common.name, 'confsync', name);
    assert.equal(manifest.addOns.calendar.currentEventAccess, 'READ', name);
    const solutions = manifest.addOns.calendar.conferenceSolution;
    assert.equal(solutions.length, 1, name);
    assert.equal(solutions[0].id, 'confsync', name);
    assert.equal(solutions[0].name, 'confsync', name);
    assert.equal(solutions[0].onCreateFunction, 'onCreateConference', name);
    // Apps Script calls functions by their global name.
    assert.equal(typeof sandbox[solutions[0].onCreateFunction], 'function', name);
  }
  assert.equal(typeof sandbox.onCalendarEventUpdated, 'function');
  assert.deepEqual(configure.manifestProblems(MANIFEST), [], 'the checked-in manifest follows the rules (configure --check)');
});

test('manifest: a scope for every access it declares and every service Code.js calls', () => {
  // Calendar manifest resource, currentEventAccess: READ or READ_WRITE requires
  // calendar.addons.current.event.read; WRITE or READ_WRITE requires ...current.event.write.
  // (Was: READ without the read scope, which Google's reference does not allow.)
  const perAccess = {
    READ: [`${GOOGLE}calendar.addons.current.event.read`],
    READ_WRITE: [`${GOOGLE}calendar.addons.current.event.read`, `${GOOGLE}calendar.addons.current.event.write`],
    WRITE: [`${GOOGLE}calendar.addons.current.event.write`],
    METADATA: [],
  };
  // Each service Code.js calls -> the scope its reference names.
  const perService = [
    // Calendar conferencing add-ons run with calendar.addons.execute.
    [/onCreateConference/, `${GOOGLE}calendar.addons.execute`],
    // UrlFetchApp reference: "This service requires the script.external_request scope".
    [/UrlFetchApp\.fetch\(/, `${GOOGLE}script.external_request`],
    // ScriptApp triggers (newTrigger, getProjectTriggers, deleteTrigger): script.scriptapp.
    [/ScriptApp\.(newTrigger|getProjectTriggers|deleteTrigger)\(/, `${GOOGLE}script.scriptapp`],
    // "Connect to Google Cloud services": the openid scope is required for getIdentityToken();
    // userinfo.email puts the user's email into the token.
    [/ScriptApp\.getIdentityToken\(/, 'openid'],
    [/ScriptApp\.getIdentityToken\(/, `${GOOGLE}userinfo.email`],
  ];
  for (const [name, manifest] of MANIFESTS) {
    const scopes = manifest.oauthScopes;
    for (const scope of perAccess[manifest.addOns.calendar.currentEventAccess]) {
      assert.ok(scopes.includes(scope), `${name}: ${scope} for currentEventAccess`);
    }
    for (const [use, scope] of perService) {
      assert.ok(use.test(CODE), `Code.js still uses ${use}`);
      assert.ok(scopes.includes(scope), `${name}: ${scope}`);
    }
    // The EventUpdated trigger watches the user's calendar: a calendar read scope (Open points).
    assert.ok(scopes.some((s) => /auth\/calendar(\.readonly)?$/.test(s)), `${name}: calendar read scope`);
    assert.equal(new Set(scopes).size, scopes.length, `${name}: no duplicate scopes`);
  }
  // LockService needs no scope: Code.js uses it, and nothing else asks for one.
  assert.match(CODE, /LockService\.getUserLock\(/);
});

test('manifest: urlFetchWhitelist is present, https, full domain, ends with "/" and covers the base URL', () => {
  // Manifest reference "Allowlist URLs": required for a versioned deployment; each prefix a valid
  // https:// URL with a full domain and a non-empty path ("https://www.google.com/" is valid,
  // "https://www.google.com" is not). (Was: asserted absent, which blocks a versioned deployment.)
  for (const [name, manifest] of MANIFESTS) {
    assert.ok(Array.isArray(manifest.urlFetchWhitelist) && manifest.urlFetchWhitelist.length > 0, name);
    for (const prefix of manifest.urlFetchWhitelist) {
      assert.match(prefix, /^https:\/\/[a-z0-9.-]+\.[a-z]{2,}(:\d+)?\//i, `${name}: ${prefix}`);
      assert.ok(prefix.endsWith('/'), `${name}: ${prefix} ends with "/"`);
      assert.doesNotThrow(() => new URL(prefix));
      assert.deepEqual(configure.allowlistPrefixProblems(prefix), [], prefix);
    }
  }
  assert.deepEqual(RENDERED.urlFetchWhitelist, [`${BASE}/`]);
  // Every URL the add-on fetches for the tests' base URL is allowed (the fake enforces it).
  const { api, fakes } = load({ responses: [{ status: 201, body: FULL_ANSWER }, { status: 202, body: '' }] });
  assert.deepEqual(api.onCreateConference(createArg()), EXPECTED_DATA);
  assert.equal(api.onCalendarEventUpdated({ calendarId: CAL, triggerUid: '1' }), true);
  assert.equal(fakes.requests.length, 2);
  // ...and one outside it is refused, as Apps Script refuses it.
  const outside = load({ properties: { ...CONFIG, CONFSYNC_BASE_URL: 'https://other.example.net' }, responses: [{ status: 201, body: FULL_ANSWER }] });
  assert.deepEqual(outside.api.onCreateConference(createArg()), errorData('TEMPORARY'));
  assert.match(outside.fakes.logText(), /urlFetchWhitelist/);
});

test('manifest: logo URLs follow the hosting rule', () => {
  // "Provide conference solution logos": conferenceSolution[].logoUrl images are used in
  // Calendar directly and must be on Google's infrastructure (the Marketplace SDK store-listing
  // icon). (Was: a logo on confsync.example.com.) addOns.common.logoUrl: https.
  const google = /^https:\/\/([a-z0-9-]+\.)*(googleusercontent\.com|gstatic\.com)\//;
  for (const [name, manifest] of MANIFESTS) {
    for (const solution of manifest.addOns.calendar.conferenceSolution) {
      assert.match(solution.logoUrl, google, `${name}: ${solution.id}`);
    }
    assert.match(manifest.addOns.common.logoUrl, /^https:\/\//, name);
  }
  assert.deepEqual(configure.logoUrlProblems('https://lh3.googleusercontent.com/abc=s96', { googleHosted: true }), []);
  for (const bad of ['https://confsync.example.com/logo.png', 'http://www.gstatic.com/x.png', 'https://gstatic.com.evil.example/x.png', 'logo.png']) {
    assert.notDeepEqual(configure.logoUrlProblems(bad, { googleHosted: true }), [], bad);
  }
});

test('configure: the backend URL becomes the whitelist prefix; bad backends and logos are refused', () => {
  for (const [backend, prefix] of [
    ['https://confsync.example.com', 'https://confsync.example.com/'],
    ['https://confsync.example.com/', 'https://confsync.example.com/'],
    [' https://Confsync.Example.com:8443/api ', 'https://confsync.example.com:8443/api/'],
    ['https://h.example.com/api//v2/', 'https://h.example.com/api/v2/'],
  ]) {
    assert.equal(configure.backendPrefix(backend), prefix, backend);
    assert.deepEqual(configure.renderManifest(TEMPLATE, { backend }).urlFetchWhitelist, [prefix]);
  }
  for (const bad of ['', 'http://confsync.example.com/', 'confsync.example.com', 'https://localhost/', 'https://10.0.0.1/',
    'https://u:p@confsync.example.com/', 'https://confsync.example.com/?a=1', 'https://confsync.example.com/#x', 'ftp://x.example.com/']) {
    assert.throws(() => configure.renderManifest(TEMPLATE, { backend: bad }), /backend URL/, bad);
  }
  assert.throws(() => configure.renderManifest(TEMPLATE, { backend: BASE, logo: 'https://confsync.example.com/logo.png' }), /Google's infrastructure/);
  const custom = configure.renderManifest(TEMPLATE, { backend: BASE, logo: 'https://lh3.googleusercontent.com/icon=s96' });
  assert.equal(custom.addOns.common.logoUrl, 'https://lh3.googleusercontent.com/icon=s96');
  assert.equal(custom.addOns.calendar.conferenceSolution[0].logoUrl, 'https://lh3.googleusercontent.com/icon=s96');
  // A manifest missing a scope its access needs is reported.
  const broken = JSON.parse(JSON.stringify(RENDERED));
  broken.oauthScopes = broken.oauthScopes.filter((x) => !x.endsWith('current.event.read'));
  delete broken.urlFetchWhitelist;
  const problems = configure.manifestProblems(broken).join('\n');
  assert.match(problems, /current\.event\.read \(currentEventAccess READ\)/);
  assert.match(problems, /urlFetchWhitelist is missing/);
});

test('configure: the command writes the manifest (and --check reads it back)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'confsync-addon-'));
  const out = path.join(dir, 'appsscript.json');
  const quiet = { log: console.log, error: console.error };
  console.log = () => {};
  console.error = () => {};
  try {
    assert.equal(configure.main(['--backend', 'https://meet.example.org/confsync', '--out', out]), 0);
    const written = JSON.parse(fs.readFileSync(out, 'utf8'));
    assert.deepEqual(written.urlFetchWhitelist, ['https://meet.example.org/confsync/']);
    assert.equal(configure.main(['--check', '--out', out]), 0);
    written.addOns.calendar.conferenceSolution[0].logoUrl = 'https://meet.example.org/logo.png';
    fs.writeFileSync(out, JSON.stringify(written));
    assert.equal(configure.main(['--check', '--out', out]), 1);
    assert.throws(() => configure.main(['--out', out]), /--backend is required/);
  } finally {
    Object.assign(console, quiet);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---- success -----------------------------------------------------------------------------------

test('success: every entry point type, field and add-on parameter is mapped 1:1', () => {
  const { api, fakes } = load({ responses: [{ status: 201, body: FULL_ANSWER }] });
  const data = api.onCreateConference(createArg());
  assert.deepEqual(data, EXPECTED_DATA);
  // The builder chain Google documents, in order.
  const builderCalls = fakes.calls.filter((c) => c[0] === 'ConferenceDataBuilder').map((c) => c[1]);
  assert.deepEqual(builderCalls, [
    'setConferenceSolutionId', 'setConferenceId',
    'addEntryPoint', 'addEntryPoint', 'addEntryPoint', 'addEntryPoint',
    'addConferenceParameter', 'addConferenceParameter', 'addConferenceParameter',
    'setNotes', 'build',
  ]);
  assert.ok(fakes.calls.some((c) => c[0] === 'EntryPoint' && c[1] === 'setEntryPointType' && c[2] === 'VIDEO'));
  assert.ok(!fakes.calls.some((c) => c[1] === 'setError'));
  assert.equal(fakes.logs.filter((l) => l.level === 'error').length, 0, fakes.logText());
});

test('success: labels are set where EntryPoint offers setLabel, and skipped (no throw) where not', () => {
  const withLabel = load({ responses: [{ status: 200, body: FULL_ANSWER }], entryPointSetLabel: true });
  const data = withLabel.api.onCreateConference(createArg());
  assert.equal(data.entryPoints[0].label, 'meet.example.com/j/4711');
  assert.equal(data.entryPoints[1].label, '+49 30 1234567');
  assert.equal(data.entryPoints[2].label, undefined);

  const without = load({ responses: [{ status: 200, body: FULL_ANSWER }] });
  assert.deepEqual(without.api.onCreateConference(createArg()), EXPECTED_DATA);
});

test('success: minimal answer (no parameters, no notes); unknown entry point types are skipped', () => {
  const answer = {
    conferenceId: 'm-1',
    conferenceSolution: { key: { type: 'addOn' }, name: 'confsync' },
    entryPoints: [
      { entryPointType: 'hologram', uri: 'holo://x' },
      { entryPointType: 'video', uri: 'https://meet.example.com/j/1' },
      { entryPointType: 'phone' }, // no uri
    ],
    parameters: { addOnParameters: { parameters: {} } },
  };
  const { api, fakes } = load({ responses: [{ status: 200, body: answer }] });
  assert.deepEqual(api.onCreateConference(createArg()), {
    conferenceSolutionId: 'confsync',
    conferenceId: 'm-1',
    entryPoints: [{ entryPointType: 'VIDEO', uri: 'https://meet.example.com/j/1' }],
  });
  assert.ok(!fakes.calls.some((c) => c[1] === 'setNotes'));
  assert.match(fakes.logText(), /unknown type hologram/);
});

test('request: URL, method, headers with the bearer, JSON body with calendarId/eventId/requestId', () => {
  const { api, fakes } = load({
    properties: { CONFSYNC_BASE_URL: ' https://confsync.example.com/api// ', CONFSYNC_API_KEY: ` ${API_KEY}\n` },
    responses: [{ status: 201, body: FULL_ANSWER }],
  });
  api.onCreateConference(createArg(CAL, EVENT, { conferenceData: { conferenceSolution: { key: { type: 'addOn' } } } }));
  assert.equal(fakes.requests.length, 1);
  const { url, params } = fakes.requests[0];
  assert.equal(url, 'https://confsync.example.com/api/v1/conferences');
  assert.equal(params.method, 'post');
  assert.equal(params.contentType, 'application/json');
  assert.equal(params.muteHttpExceptions, true);
  // The API key names the deployment, the ID token the user.
  assert.deepEqual(params.headers, HEADERS);
  const body = JSON.parse(params.payload);
  assert.deepEqual(body, {
    calendarId: CAL,
    eventId: EVENT,
    requestId: `cs-${encodeURIComponent(CAL)}:${encodeURIComponent(EVENT)}`,
    solutionId: 'confsync',
  });
});

test('request: requestId is stable per event (a retry after a lost answer sends the same one)', () => {
  const { api, fakes } = load({ responses: [{ status: 201, body: FULL_ANSWER }, { status: 201, body: FULL_ANSWER }] });
  api.onCreateConference(createArg(CAL, EVENT));
  api.onCreateConference(createArg(CAL, EVENT));
  const ids = fakes.requests.map((r) => JSON.parse(r.params.payload).requestId);
  assert.equal(ids.length, 2);
  assert.equal(ids[0], ids[1], 'the same event, the same request id');
});

test('request: requestId derived from calendar and event when Utilities is absent', () => {
  const run = () => {
    const { api, fakes, sandbox } = load({ utilities: false, responses: [{ status: 201, body: FULL_ANSWER }] });
    assert.equal(sandbox.Utilities, undefined);
    api.onCreateConference(createArg('team#1@group.calendar.google.com', 'ev1'));
    return JSON.parse(fakes.requests[0].params.payload).requestId;
  };
  const first = run();
  assert.equal(first, run(), 'deterministic');
  assert.ok(first.includes(encodeURIComponent('team#1@group.calendar.google.com')));
  assert.ok(first.includes('ev1'));
});

test('solution id: one of ours named in the argument is used; anything else falls back to confsync', () => {
  const ours = load({ responses: [{ status: 201, body: FULL_ANSWER }] });
  ours.api.onCreateConference({ eventData: { calendarId: CAL, eventId: EVENT }, conferenceSolutionId: 'confsync' });
  assert.equal(JSON.parse(ours.fakes.requests[0].params.payload).solutionId, 'confsync');

  const foreign = load({ responses: [{ status: 201, body: FULL_ANSWER }] });
  const data = foreign.api.onCreateConference({
    eventData: { calendarId: CAL, eventId: EVENT, conferenceSolutionId: 'hangoutsMeet' },
  });
  assert.equal(JSON.parse(foreign.fakes.requests[0].params.payload).solutionId, 'confsync');
  assert.equal(data.conferenceSolutionId, 'confsync');
});

test('a service solution name that differs from ours is logged as a warning', () => {
  const answer = { ...FULL_ANSWER, conferenceSolution: { key: { type: 'addOn' }, name: 'Other Meetings' } };
  const plain = load({ responses: [{ status: 201, body: answer }] });
  assert.deepEqual(plain.api.onCreateConference(createArg()), EXPECTED_DATA);
  assert.ok(plain.fakes.logs.some((l) => l.level === 'warn' && /Other Meetings/.test(l.text)));

  const renamed = load({
    properties: { ...CONFIG, CONFSYNC_SOLUTION_NAME: 'Other Meetings' },
    responses: [{ status: 201, body: answer }],
  });
  renamed.api.onCreateConference(createArg());
  assert.equal(renamed.fakes.logs.filter((l) => l.level === 'warn').length, 0, renamed.fakes.logText());
});

// ---- errors ------------------------------------------------------------------------------------

test('each conferenceErrorType in an error answer is mapped', async (t) => {
  for (const type of ERROR_TYPES) {
    await t.test(type, () => {
      const status = { AUTHENTICATION: 401, PERMISSION_DENIED: 403, TEMPORARY: 503 }[type] || 400;
      const error = { conferenceErrorType: type, message: `no: ${type}` };
      if (type === 'AUTHENTICATION') error.authenticationUrl = 'https://confsync.example.com/login?state=xyz';
      const { api, fakes } = load({ responses: [{ status, body: { error } }] });
      const data = api.onCreateConference(createArg());
      assert.deepEqual(data, errorData(type, error.authenticationUrl));
      assert.deepEqual(fakes.createAttempts, [], 'no trigger for a failed conference');
    });
  }
});

test('unknown conferenceErrorType -> UNKNOWN; authenticationUrl only with AUTHENTICATION', () => {
  const unknown = load({ responses: [{ status: 409, body: { error: { conferenceErrorType: 'QUOTA_EXCEEDED', message: 'x' } } }] });
  assert.deepEqual(unknown.api.onCreateConference(createArg()), errorData('UNKNOWN'));

  const stray = load({
    responses: [{ status: 403, body: { error: { conferenceErrorType: 'PERMISSION_DENIED', authenticationUrl: 'https://x.example.com/' } } }],
  });
  assert.deepEqual(stray.api.onCreateConference(createArg()), errorData('PERMISSION_DENIED'));

  // AUTHENTICATION without an authentication URL leaves the user nowhere to sign in
  // (ConferenceError reference: for AUTHENTICATION the add-on must provide a URL calling back
  // into the add-on to let users log in). (Was: passed on as AUTHENTICATION.) -> PERMANENT.
  const noUrl = load({ responses: [{ status: 401, body: { error: { conferenceErrorType: 'AUTHENTICATION', message: 'log in' } } }] });
  assert.deepEqual(noUrl.api.onCreateConference(createArg()), errorData('PERMANENT'));
  assert.match(noUrl.fakes.logText(), /without a usable authenticationUrl/);
});

test('an error object in a 2xx answer is still an error', () => {
  const { api, fakes } = load({ responses: [{ status: 200, body: { error: { conferenceErrorType: 'PERMANENT', message: 'gone' } } }] });
  assert.deepEqual(api.onCreateConference(createArg()), errorData('PERMANENT'));
  assert.deepEqual(fakes.createAttempts, []);
});

test('5xx without an error body and a throwing fetch -> TEMPORARY', async (t) => {
  for (const [name, response] of [
    ['500 empty', { status: 500, body: '' }],
    ['502 HTML', { status: 502, body: '<html><body>Bad Gateway</body></html>' }],
    ['503 JSON without error', { status: 503, body: { status: 'overloaded' } }],
    ['429', { status: 429, body: '' }],
    ['fetch throws', { throw: new Error('Address unavailable: https://confsync.example.com/v1/conferences') }],
    ['fetch throws a string', { throw: 'Exception: Timeout' }],
  ]) {
    await t.test(name, () => {
      const { api, fakes } = load({ responses: [response] });
      assert.deepEqual(api.onCreateConference(createArg()), errorData('TEMPORARY'));
      assert.ok(fakes.logs.some((l) => l.level === 'error'), 'logged');
    });
  }
});

test('401 / 403 without a body -> PERMANENT / PERMISSION_DENIED; other 4xx -> UNKNOWN', () => {
  // A bare 401 has no authentication URL, and AUTHENTICATION needs one (ConferenceError
  // reference, setAuthenticationUrl): our credentials were refused, so PERMANENT. (Was:
  // AUTHENTICATION without a URL.)
  for (const [status, type] of [[401, 'PERMANENT'], [403, 'PERMISSION_DENIED'], [404, 'UNKNOWN'], [400, 'UNKNOWN']]) {
    const { api } = load({ responses: [{ status, body: '' }] });
    assert.deepEqual(api.onCreateConference(createArg()), errorData(type), String(status));
  }
});

test('malformed success answers -> UNKNOWN, and no trigger', async (t) => {
  for (const [name, body] of [
    ['not JSON', '{"conferenceId": "m-1", "entryPoints": ['],
    ['HTML', '<html>login</html>'],
    ['JSON array', '[]'],
    ['JSON null', 'null'],
    ['no conferenceId', { ...FULL_ANSWER, conferenceId: undefined }],
    ['no entry points', { ...FULL_ANSWER, entryPoints: [] }],
    ['only a "more" entry point', { ...FULL_ANSWER, entryPoints: [{ entryPointType: 'more', uri: 'https://x.example.com/' }] }],
    ['entryPoints not an array', { ...FULL_ANSWER, entryPoints: 'video' }],
  ]) {
    await t.test(name, () => {
      const { api, fakes } = load({ responses: [{ status: 200, body }] });
      assert.deepEqual(api.onCreateConference(createArg()), errorData('UNKNOWN'));
      assert.deepEqual(fakes.createAttempts, []);
    });
  }
});

test('missing or unusable config -> PERMANENT without calling fetch', async (t) => {
  for (const [name, properties] of [
    ['nothing set', {}],
    ['no API key', { CONFSYNC_BASE_URL: BASE }],
    ['blank API key', { CONFSYNC_BASE_URL: BASE, CONFSYNC_API_KEY: '   ' }],
    ['no base URL', { CONFSYNC_API_KEY: API_KEY }],
    ['http base URL', { CONFSYNC_BASE_URL: 'http://confsync.example.com', CONFSYNC_API_KEY: API_KEY }],
    ['relative base URL', { CONFSYNC_BASE_URL: 'confsync.example.com', CONFSYNC_API_KEY: API_KEY }],
    ['base URL with query', { CONFSYNC_BASE_URL: 'https://confsync.example.com/?a=1', CONFSYNC_API_KEY: API_KEY }],
  ]) {
    await t.test(name, () => {
      const { api, fakes } = load({ properties, responses: [] });
      assert.deepEqual(api.onCreateConference(createArg()), errorData('PERMANENT'));
      assert.equal(fakes.requests.length, 0);
      assert.ok(fakes.logs.some((l) => l.level === 'error' && /CONFSYNC_/.test(l.text)), fakes.logText());
    });
  }
});

test('missing calendarId or eventId -> PERMANENT without calling fetch; never throws', () => {
  for (const arg of [undefined, null, {}, { eventData: {} }, { eventData: { calendarId: CAL } }, { eventData: { eventId: EVENT } }]) {
    const { api, fakes } = load({ responses: [] });
    assert.deepEqual(api.onCreateConference(arg), errorData('PERMANENT'));
    assert.equal(fakes.requests.length, 0);
  }
});

test('base URL normalisation', () => {
  const { api } = load();
  assert.equal(api.confsyncNormaliseBaseUrl_('https://h.example.com'), 'https://h.example.com');
  assert.equal(api.confsyncNormaliseBaseUrl_('https://h.example.com/'), 'https://h.example.com');
  assert.equal(api.confsyncNormaliseBaseUrl_('  HTTPS://h.example.com:8443/x/y///  '), 'HTTPS://h.example.com:8443/x/y');
  for (const bad of [null, undefined, '', '/', 'https://', 'http://h.example.com', 'ftp://h', 'https://h.example.com/#x',
    'https://user:pw@h.example.com', 'https://h .example.com']) {
    assert.equal(api.confsyncNormaliseBaseUrl_(bad), null, String(bad));
  }
});

// ---- trigger -----------------------------------------------------------------------------------

test('trigger: created once per calendar, not duplicated on a second call', () => {
  const answer = { status: 201, body: FULL_ANSWER };
  const { api, fakes, sandbox } = load({ responses: [answer, answer, answer] });
  api.onCreateConference(createArg(CAL, 'e1'));
  assert.deepEqual(fakes.createdTriggers, [{ handler: 'onCalendarEventUpdated', calendarId: CAL }]);
  const t = sandbox.ScriptApp.getProjectTriggers()[0];
  assert.equal(t.getEventType(), sandbox.ScriptApp.EventType.ON_EVENT_UPDATED);
  assert.equal(t.getTriggerSourceId(), CAL);

  api.onCreateConference(createArg(CAL, 'e2'));
  assert.equal(fakes.createAttempts.length, 1, 'second conference on the same calendar: no new trigger');

  api.onCreateConference(createArg('team@group.calendar.google.com', 'e3'));
  assert.deepEqual(fakes.createdTriggers.map((c) => c.calendarId), [CAL, 'team@group.calendar.google.com']);
});

test('trigger: an existing trigger for the calendar is reused; other kinds of trigger are not', () => {
  const { api, fakes } = load({
    responses: [{ status: 201, body: FULL_ANSWER }],
    triggers: [
      { handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: 'other@example.com' },
      { handler: 'nightly', eventType: 'CLOCK', sourceId: CAL, source: 'CLOCK' },
      { handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: CAL },
    ],
  });
  assert.deepEqual(api.onCreateConference(createArg()), EXPECTED_DATA);
  assert.deepEqual(fakes.createAttempts, []);

  const stale = load({
    responses: [{ status: 201, body: FULL_ANSWER }],
    triggers: [{ handler: 'syncEvents', eventType: 'ON_EVENT_UPDATED', sourceId: CAL }], // the seed script's
  });
  stale.api.onCreateConference(createArg());
  assert.deepEqual(stale.fakes.createdTriggers, [{ handler: 'onCalendarEventUpdated', calendarId: CAL }]);
});

test('trigger: the 20-trigger limit is respected (logged, skipped, conference still returned)', () => {
  const triggers = Array.from({ length: 20 }, (_, i) => ({
    handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: `cal${i}@example.com`,
  }));
  const { api, fakes, sandbox } = load({ responses: [{ status: 201, body: FULL_ANSWER }], triggers });
  // The conference is returned, and the organizer reads in its notes why the add-on does not
  // watch the calendar (onCreateFunction can return nothing but ConferenceData).
  const data = api.onCreateConference(createArg());
  assert.deepEqual(data, { ...EXPECTED_DATA, notes: `${EXPECTED_DATA.notes}<br><br>${sandbox.CONFSYNC_TRIGGER_LIMIT_NOTE_}` });
  assert.match(data.notes, /20 triggers per user/);
  assert.deepEqual(fakes.createAttempts, [], 'create() never attempted');
  // ...and the operator in the log.
  assert.ok(fakes.logs.some((l) => l.level === 'warn' && /trigger limit reached/.test(l.text) && /20/.test(l.text) && l.text.includes(CAL)), fakes.logText());

  // 19 existing: the 20th is still allowed.
  const nineteen = load({ responses: [{ status: 201, body: FULL_ANSWER }], triggers: triggers.slice(1) });
  nineteen.api.onCreateConference(createArg());
  assert.equal(nineteen.fakes.createdTriggers.length, 1);
});

test('trigger: a failing ScriptApp never fails the conference', () => {
  const { api, fakes } = load({
    responses: [{ status: 201, body: FULL_ANSWER }],
    triggerCreateError: new Error('Service unavailable: ScriptApp'),
  });
  assert.deepEqual(api.onCreateConference(createArg()), EXPECTED_DATA);
  assert.ok(fakes.logs.some((l) => l.level === 'error' && /sync trigger/.test(l.text)));

  const broken = load({ responses: [{ status: 201, body: FULL_ANSWER }] });
  broken.sandbox.ScriptApp.getProjectTriggers = () => { throw new Error('Authorization is required'); };
  assert.deepEqual(broken.api.onCreateConference(createArg()), EXPECTED_DATA);
});

// ---- onCalendarEventUpdated --------------------------------------------------------------------

test('onCalendarEventUpdated posts to /v1/calendars/{encoded id}/sync with the bearer', () => {
  const calendarId = 'c_8f1e#team/x?y@group.calendar.google.com';
  const { api, fakes } = load({
    properties: { ...CONFIG, CONFSYNC_BASE_URL: `${BASE}/` },
    responses: [{ status: 202, body: '' }],
  });
  const ok = api.onCalendarEventUpdated({ calendarId, authMode: 'FULL', triggerUid: '123' });
  assert.equal(ok, true);
  assert.equal(fakes.requests.length, 1);
  const { url, params } = fakes.requests[0];
  assert.equal(url, `${BASE}/v1/calendars/c_8f1e%23team%2Fx%3Fy%40group.calendar.google.com/sync`);
  assert.equal(params.method, 'post');
  assert.equal(params.muteHttpExceptions, true);
  assert.deepEqual(params.headers, HEADERS);
  assert.equal(fakes.logs.length, 0, fakes.logText());
});

test('onCalendarEventUpdated swallows failures and logs them', async (t) => {
  for (const [name, response] of [
    ['500', { status: 500, body: 'internal error' }],
    ['401', { status: 401, body: { error: { conferenceErrorType: 'AUTHENTICATION', message: 'bad key' } } }],
    ['fetch throws', { throw: new Error('DNS error: confsync.example.com') }],
  ]) {
    await t.test(name, () => {
      const { api, fakes } = load({ responses: [response] });
      let result;
      assert.doesNotThrow(() => { result = api.onCalendarEventUpdated({ calendarId: CAL }); });
      assert.equal(result, false);
      assert.equal(fakes.requests.length, 1);
      assert.ok(fakes.logs.some((l) => l.level === 'error'), 'logged with console.error');
    });
  }
  await t.test('missing config: no fetch', () => {
    const { api, fakes } = load({ properties: {}, responses: [] });
    assert.equal(api.onCalendarEventUpdated({ calendarId: CAL }), false);
    assert.equal(fakes.requests.length, 0);
  });
  await t.test('no event object / no calendarId', () => {
    const { api, fakes } = load({ responses: [] });
    assert.equal(api.onCalendarEventUpdated(undefined), false);
    assert.equal(api.onCalendarEventUpdated({}), false);
    assert.equal(fakes.requests.length, 0);
  });
  await t.test('PropertiesService throws', () => {
    const { api, sandbox } = load({ responses: [] });
    sandbox.PropertiesService.getScriptProperties = () => { throw new Error('quota'); };
    assert.equal(api.onCalendarEventUpdated({ calendarId: CAL }), false);
  });
});

// ---- identity ----------------------------------------------------------------------------------

test('identity: every call carries the user\'s ID token in X-Confsync-Identity, next to the API key', () => {
  const token = fakeIdToken({ email: 'bob@example.com', sub: '42' });
  const { api, fakes, sandbox } = load({ identityToken: token, responses: [{ status: 201, body: FULL_ANSWER }, { status: 202, body: '' }] });
  assert.equal(sandbox.CONFSYNC_IDENTITY_HEADER_, IDENTITY_HEADER);
  api.onCreateConference(createArg());
  api.onCalendarEventUpdated({ calendarId: CAL, triggerUid: '1' });
  for (const r of fakes.requests) {
    // The header's value is the compact JWT as ScriptApp.getIdentityToken() returns it, no prefix.
    assert.equal(r.params.headers[IDENTITY_HEADER], token, r.url);
    assert.equal(r.params.headers.Authorization, `Bearer ${API_KEY}`, r.url);
  }
  const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  assert.equal(claims.iss, 'https://accounts.google.com');
  assert.match(claims.aud, /\.apps\.googleusercontent\.com$/, "the script's OAuth client id");
});

test('identity: no token (openid scope missing or not granted) -> PERMANENT, clear log, no call', async (t) => {
  for (const [name, identityToken] of [
    ['null', null],
    ['empty', ''],
    ['not a JWT', 'ya29.an-access-token'],
    ['throws', new Error('Authorization is required to perform that action.')],
  ]) {
    await t.test(name, () => {
      const { api, fakes } = load({ identityToken, responses: [] });
      assert.deepEqual(api.onCreateConference(createArg()), errorData('PERMANENT'));
      assert.equal(api.onCalendarEventUpdated({ calendarId: CAL, triggerUid: '1' }), false);
      assert.equal(fakes.requests.length, 0);
      assert.ok(fakes.logs.some((l) => l.level === 'error' && /identity token/.test(l.text) && /openid/.test(l.text)), fakes.logText());
      assert.deepEqual(fakes.createAttempts, []);
    });
  }
});

// ---- error contract ------------------------------------------------------------------------------

test('AUTHENTICATION only with an absolute https authenticationUrl; otherwise PERMANENT', async (t) => {
  const long = `https://confsync.example.com/oauth/google/start?calendar=${'x'.repeat(1800)}`;
  for (const [name, url, expected] of [
    ['absolute https', 'https://confsync.example.com/oauth/google/start?calendar=alice%40example.com', 'AUTHENTICATION'],
    ['with a port', 'https://confsync.example.com:8443/oauth/google/start', 'AUTHENTICATION'],
    // The service without a public URL answers a path: setAuthenticationUrl would throw.
    ['relative', '/oauth/google/start?calendar=alice%40example.com', 'PERMANENT'],
    ['http', 'http://confsync.example.com/oauth/google/start', 'PERMANENT'],
    ['not a URL', 'sign in at our website', 'PERMANENT'],
    ['over 1800 characters', long, 'PERMANENT'],
    ['not a string', { href: 'https://x.example.com/' }, 'PERMANENT'],
  ]) {
    await t.test(name, () => {
      const { api, fakes } = load({
        responses: [{ status: 401, body: { error: { conferenceErrorType: 'AUTHENTICATION', message: 'connect', authenticationUrl: url } } }],
      });
      const data = api.onCreateConference(createArg());
      assert.deepEqual(data, errorData(expected, expected === 'AUTHENTICATION' ? url : undefined));
      // setAuthenticationUrl is only called with what it accepts (the fake throws otherwise).
      const set = fakes.calls.filter((c) => c[1] === 'setAuthenticationUrl');
      assert.equal(set.length, expected === 'AUTHENTICATION' ? 1 : 0);
    });
  }
});

test('fake ConferenceError.setAuthenticationUrl checks what the real one checks', () => {
  // ConferenceError reference: throws "if the provided URL is not a valid http/https URL or is
  // too long"; the maximum length is 1800 characters.
  const { ConferenceDataService } = createFakes().globals;
  const error = () => ConferenceDataService.newConferenceError();
  assert.doesNotThrow(() => error().setAuthenticationUrl('https://confsync.example.com/login'));
  assert.doesNotThrow(() => error().setAuthenticationUrl('http://confsync.example.com/login'));
  assert.doesNotThrow(() => error().setAuthenticationUrl(`https://c.example.com/${'a'.repeat(1800 - 22)}`));
  for (const bad of ['/oauth/google/start', 'confsync.example.com/login', 'javascript:alert(1)', 'ftp://x.example.com/',
    `https://c.example.com/${'a'.repeat(1800)}`]) {
    assert.throws(() => error().setAuthenticationUrl(bad), /authenticationUrl/, bad.slice(0, 40));
  }
});

test('the add-on never throws even if setAuthenticationUrl refuses a URL it passed', () => {
  const { api, fakes, sandbox } = load({
    responses: [{ status: 401, body: { error: { conferenceErrorType: 'AUTHENTICATION', authenticationUrl: 'https://confsync.example.com/login' } } }],
  });
  const real = sandbox.ConferenceDataService.newConferenceError;
  sandbox.ConferenceDataService.newConferenceError = () => {
    const e = real();
    e.setAuthenticationUrl = () => { throw new Error('Invalid argument: authenticationUrl'); };
    return e;
  };
  assert.deepEqual(api.onCreateConference(createArg()), errorData('PERMANENT'));
  assert.match(fakes.logText(), /refused the authentication URL/);
});

test('fake UrlFetchApp honours muteHttpExceptions; the add-on always sets it', () => {
  // UrlFetchApp reference: muteHttpExceptions (default false): if true, the fetch doesn't throw
  // when the response code indicates failure, and returns the HTTPResponse instead.
  const { UrlFetchApp } = createFakes({ responses: [{ status: 404, body: 'nope' }, { status: 503, body: '' }, { status: 404, body: 'x' }, { status: 200, body: 'ok' }] }).globals;
  assert.throws(() => UrlFetchApp.fetch('https://x.example.com/a', {}), /returned code 404/);
  assert.throws(() => UrlFetchApp.fetch('https://x.example.com/b'), /returned code 503/);
  assert.equal(UrlFetchApp.fetch('https://x.example.com/c', { muteHttpExceptions: true }).getResponseCode(), 404);
  assert.equal(UrlFetchApp.fetch('https://x.example.com/d').getResponseCode(), 200);

  const { api, fakes } = load({ responses: [{ status: 500, body: '' }, { status: 500, body: '' }] });
  api.onCreateConference(createArg());
  api.onCalendarEventUpdated({ calendarId: CAL });
  assert.equal(fakes.requests.length, 2);
  assert.ok(fakes.requests.every((r) => r.params.muteHttpExceptions === true));
  // The answers were read (status logged), not lost in an exception.
  assert.equal((fakes.logText().match(/answered 500/g) || []).length, 2, fakes.logText());
});

test('TEMPORARY from the service (its create deadline) is passed on after exactly one request', async (t) => {
  for (const [name, response] of [
    ['503 TEMPORARY', { status: 503, body: { error: { code: 503, conferenceErrorType: 'TEMPORARY', message: 'creating the meeting takes longer than expected, try again' } } }],
    ['fetch timed out', { throw: new Error('Exception: Timeout: https://confsync.example.com/v1/conferences') }],
    ['429', { status: 429, body: '' }],
  ]) {
    await t.test(name, () => {
      let calls = 0;
      const { api, fakes } = load({ responses: () => { calls++; return response; } });
      assert.deepEqual(api.onCreateConference(createArg()), errorData('TEMPORARY'));
      assert.equal(calls, 1, 'no retry inside one execution');
      assert.deepEqual(fakes.createAttempts, [], 'no trigger for a conference that does not exist yet');
    });
  }
  await t.test('the retry (next execution) sends the same request id', () => {
    const { api, fakes } = load({ responses: [{ status: 503, body: { error: { conferenceErrorType: 'TEMPORARY' } } }, { status: 200, body: FULL_ANSWER }] });
    assert.deepEqual(api.onCreateConference(createArg()), errorData('TEMPORARY'));
    assert.deepEqual(api.onCreateConference(createArg()), EXPECTED_DATA);
    const ids = fakes.requests.map((r) => JSON.parse(r.params.payload).requestId);
    assert.equal(ids[0], ids[1]);
  });
});

// ---- trigger: lock, limit, removal -----------------------------------------------------------

/** A second execution of the same user, sharing the first one's triggers and lock. */
function loadSecond(first, opts = {}) {
  const fakes = createFakes({ properties: CONFIG, shared: first.fakes, ...opts });
  const sandbox = { ...fakes.globals, module: { exports: {} } };
  vm.runInNewContext(CODE, sandbox, { filename: 'Code.js' });
  return { api: sandbox.module.exports, sandbox, fakes };
}

test('trigger: two concurrent executions of one user create one trigger (LockService)', () => {
  const run = (locking) => {
    let second = null;
    let nested = false;
    const first = load({
      locking,
      responses: [{ status: 201, body: FULL_ANSWER }],
      // While the first execution is between reading the triggers and creating one, a second
      // conference on the same calendar runs to its end.
      onGetProjectTriggers: () => {
        if (nested) return;
        nested = true;
        second.api.onCreateConference(createArg(CAL, 'e2'));
      },
    });
    second = loadSecond(first, { locking, responses: [{ status: 201, body: FULL_ANSWER }] });
    assert.deepEqual(first.api.onCreateConference(createArg(CAL, 'e1')), EXPECTED_DATA);
    return { first, second };
  };
  const locked = run(true);
  assert.deepEqual(locked.first.fakes.createdTriggers, [{ handler: 'onCalendarEventUpdated', calendarId: CAL }]);
  assert.equal(locked.first.fakes.lockState.refused, 1, 'the second execution did not get the lock');
  assert.equal(locked.first.fakes.lockState.holder, null, 'released');
  assert.match(locked.second.fakes.logText(), /holds the trigger lock/);
  // Without the lock the same interleaving makes a duplicate: that is what the lock prevents.
  const unlocked = run(false);
  assert.equal(unlocked.first.fakes.createdTriggers.length, 2);
});

test('trigger: the lock is released when ScriptApp fails', () => {
  const { api, fakes } = load({ responses: [{ status: 201, body: FULL_ANSWER }], triggerCreateError: new Error('Service unavailable: ScriptApp') });
  assert.deepEqual(api.onCreateConference(createArg()), EXPECTED_DATA);
  assert.equal(fakes.lockState.acquired, 1);
  assert.equal(fakes.lockState.holder, null);
});

test('trigger: create() refused past 20 (stale count) -> limit, noted and logged', () => {
  // Quotas: 20 triggers per user per script; TriggerBuilder.create() throws beyond that.
  const fakes = createFakes({ triggers: Array.from({ length: 20 }, (_, i) => ({ handler: 'h', eventType: 'CLOCK', sourceId: `s${i}`, source: 'CLOCK' })) });
  assert.throws(() => fakes.globals.ScriptApp.newTrigger('onCalendarEventUpdated').forUserCalendar(CAL).onEventUpdated().create(), /too many triggers/);

  // 19 when counted, 20 by the time create() runs (a trigger made by another script file).
  let added = false;
  const triggers = Array.from({ length: 19 }, (_, i) => ({ handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: `cal${i}@example.com` }));
  const ctx = load({
    responses: [{ status: 201, body: FULL_ANSWER }],
    triggers,
    onGetProjectTriggers: () => {
      if (added) return;
      added = true;
      ctx.fakes.triggers.push({ getHandlerFunction: () => 'other', getEventType: () => 'CLOCK', getTriggerSource: () => 'CLOCK', getTriggerSourceId: () => 'x', getUniqueId: () => 'late' });
    },
  });
  const data = ctx.api.onCreateConference(createArg());
  assert.match(data.notes, /20 triggers per user/);
  assert.equal(ctx.fakes.createAttempts.length, 1);
  assert.equal(ctx.fakes.createdTriggers.length, 0);
  assert.match(ctx.fakes.logText(), /trigger limit reached/);
});

test('trigger: the limit note fits into the notes or is left out (2048 characters)', () => {
  const triggers = Array.from({ length: 20 }, (_, i) => ({ handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: `cal${i}@example.com` }));
  const bare = load({ responses: [{ status: 201, body: { ...FULL_ANSWER, notes: undefined } }], triggers });
  assert.equal(bare.api.onCreateConference(createArg()).notes, bare.sandbox.CONFSYNC_TRIGGER_LIMIT_NOTE_);
  const full = load({ responses: [{ status: 201, body: { ...FULL_ANSWER, notes: 'n'.repeat(2000) } }], triggers });
  assert.equal(full.api.onCreateConference(createArg()).notes, 'n'.repeat(2000));
  assert.match(full.fakes.logText(), /no room in the conference notes/);
});

test('trigger: removed when the service answers 404 for the calendar (it forgot it)', () => {
  const forgotten = { status: 404, body: { error: { message: `calendar ${CAL} has no conferences of ours` } } };
  const { api, fakes } = load({
    responses: [forgotten, { status: 202, body: '' }],
    triggers: [
      { handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: CAL },
      { handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: 'team@group.calendar.google.com' },
      { handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: CAL }, // a duplicate
    ],
  });
  assert.equal(api.onCalendarEventUpdated({ calendarId: CAL, triggerUid: '1', authMode: 'FULL' }), false);
  assert.deepEqual(fakes.deletedTriggers.map((d) => [d.calendarId, d.uid]), [[CAL, '1'], [CAL, '3']]);
  assert.deepEqual(fakes.triggers.map((t) => t.getTriggerSourceId()), ['team@group.calendar.google.com']);
  assert.equal(fakes.lockState.holder, null);
  assert.match(fakes.logText(), /removed 2 sync trigger/);
  // The other calendar still syncs, and the forgotten one is not fetched again: no trigger fires.
  assert.equal(api.onCalendarEventUpdated({ calendarId: 'team@group.calendar.google.com', triggerUid: '2' }), true);
  assert.equal(fakes.requests.length, 2);
});

test('trigger: a 404 that names the calendar also removes it; routing 404s and others do not', async (t) => {
  for (const [name, response, removes] of [
    ['calendarId at the top level', { status: 404, body: { calendarId: CAL, error: { code: 404, message: 'unknown calendar' } } }, true],
    ['calendarId in the error', { status: 404, body: { error: { code: 404, calendarId: CAL } } }, true],
    // The service's answers for an unknown route (a wrong CONFSYNC_BASE_URL prefix).
    ['no such endpoint under /v1', { status: 404, body: { error: { code: 404, conferenceErrorType: 'PERMANENT', message: 'no such endpoint' } } }, false],
    ['no such endpoint outside /v1', { status: 404, body: { error: { code: 404, message: 'no such endpoint' } } }, false],
    ['a proxy page', { status: 404, body: '<html>Not Found</html>' }, false],
    ['empty', { status: 404, body: '' }, false],
    ['another calendar named', { status: 404, body: { calendarId: 'other@example.com', error: { code: 404 } } }, false],
    ['410', { status: 410, body: { error: { message: 'gone' } } }, false],
    ['500', { status: 500, body: { error: { message: 'boom' } } }, false],
  ]) {
    await t.test(name, () => {
      const { api, fakes } = load({ responses: [response], triggers: [{ handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: CAL }] });
      assert.equal(api.onCalendarEventUpdated({ calendarId: CAL, triggerUid: '1' }), false);
      assert.equal(fakes.deletedTriggers.length, removes ? 1 : 0, fakes.logText());
    });
  }
});

test('trigger: removal is skipped (and logged) when the lock is busy, and never throws', () => {
  const first = load({ responses: [{ status: 404, body: { error: { message: 'unknown' } } }], triggers: [{ handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: CAL }] });
  const held = first.sandbox.LockService.getUserLock();
  assert.equal(held.tryLock(1), true);
  const second = loadSecond(first, { responses: [{ status: 404, body: { error: { message: 'unknown' } } }] });
  assert.equal(second.api.onCalendarEventUpdated({ calendarId: CAL, triggerUid: '1' }), false);
  assert.equal(first.fakes.deletedTriggers.length, 0);
  assert.match(second.fakes.logText(), /could not take the trigger lock/);
  held.releaseLock();

  const broken = load({ responses: [{ status: 404, body: { error: { message: 'unknown' } } }], triggers: [{ handler: 'onCalendarEventUpdated', eventType: 'ON_EVENT_UPDATED', sourceId: CAL }] });
  broken.sandbox.ScriptApp.deleteTrigger = () => { throw new Error('Trigger not found'); };
  assert.equal(broken.api.onCalendarEventUpdated({ calendarId: CAL, triggerUid: '1' }), false);
  assert.match(broken.fakes.logText(), /could not remove the sync trigger/);
});

// ---- secrets -----------------------------------------------------------------------------------

test('the API key never appears in logged output', () => {
  const echo = `Bearer ${API_KEY} rejected`;
  const scenarios = [
    // The service (or a proxy) echoes the credential back in an error.
    { status: 401, body: { error: { conferenceErrorType: 'AUTHENTICATION', message: echo } } },
    { status: 400, body: `bad header: Authorization: ${echo}` },
    { status: 200, body: `not json ${API_KEY}` },
    { status: 502, body: `<pre>${API_KEY}</pre>` },
    // An exception whose text includes the key.
    { throw: new Error(`Request failed for https://confsync.example.com/v1/conferences?key=${API_KEY}`) },
  ];
  let logged = '';
  for (const response of scenarios) {
    const create = load({ responses: [response] });
    create.api.onCreateConference(createArg());
    const sync = load({ responses: [response] });
    sync.api.onCalendarEventUpdated({ calendarId: CAL });
    logged += `${create.fakes.logText()}\n${sync.fakes.logText()}\n`;
  }
  // A success with trigger trouble, and the trigger limit.
  const trig = load({ responses: [{ status: 201, body: FULL_ANSWER }], triggerCreateError: new Error(`boom ${API_KEY}`) });
  trig.api.onCreateConference(createArg());
  logged += trig.fakes.logText();

  // The identity token, echoed back by a service or a proxy.
  for (const response of [
    { status: 401, body: { error: { conferenceErrorType: 'AUTHENTICATION', message: `bad token ${IDENTITY}` } } },
    { status: 500, body: `X-Confsync-Identity: ${IDENTITY}` },
    { throw: new Error(`failed with ${IDENTITY}`) },
  ]) {
    const create = load({ responses: [response] });
    create.api.onCreateConference(createArg());
    const sync = load({ responses: [response] });
    sync.api.onCalendarEventUpdated({ calendarId: CAL });
    logged += `${create.fakes.logText()}\n${sync.fakes.logText()}\n`;
  }

  assert.ok(logged.includes('[redacted]'), 'the scenarios did try to log the key');
  assert.ok(!logged.includes(API_KEY), logged);
  assert.ok(!logged.includes(API_KEY.slice(0, 20)), 'no partial key either');
  assert.ok(!logged.includes(IDENTITY.split('.')[1]), 'no identity token either');
});

test('each test gets a fresh context: state does not leak between loads', () => {
  const a = load({ responses: [{ status: 201, body: FULL_ANSWER }] });
  a.api.onCreateConference(createArg());
  a.sandbox.leak = 1;
  const b = load({ responses: [{ status: 201, body: FULL_ANSWER }] });
  assert.equal(b.sandbox.leak, undefined);
  assert.equal(b.sandbox.ScriptApp.getProjectTriggers().length, 0);
  assert.notEqual(a.api.onCreateConference, b.api.onCreateConference);
});
