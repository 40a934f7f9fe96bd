'use strict';
// Code.js runs in a fresh vm context per test, with only the fakes as globals (no require, no
// process): exactly the names Apps Script would give it.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createFakes, ERROR_TYPES } = require('./fakes');

const ADDON_DIR = path.join(__dirname, '..');
const CODE = fs.readFileSync(path.join(ADDON_DIR, 'Code.js'), 'utf8');
const MANIFEST = JSON.parse(fs.readFileSync(path.join(ADDON_DIR, 'appsscript.json'), 'utf8'));

const API_KEY = 'sk-live-7f3c9a1e5d2b4c6a8e0f-SECRET';
const BASE = 'https://confsync.example.com';
const CONFIG = { CONFSYNC_BASE_URL: BASE, CONFSYNC_API_KEY: API_KEY };
const CAL = 'alice@example.com';
const EVENT = 'abc123def456';

/** Loads Code.js into a new context; returns its exports and the fakes it sees. */
function load(opts = {}) {
  const fakes = createFakes({ properties: CONFIG, ...opts });
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

test('manifest declares the conference solution, V8 and the scopes; handlers exist in Code.js', () => {
  const { sandbox } = load();
  assert.equal(MANIFEST.runtimeVersion, 'V8');
  assert.equal(typeof MANIFEST.timeZone, 'string');
  for (const scope of [
    'https://www.googleapis.com/auth/calendar.addons.execute',
    'https://www.googleapis.com/auth/script.external_request',
    'https://www.googleapis.com/auth/script.scriptapp',
  ]) {
    assert.ok(MANIFEST.oauthScopes.includes(scope), scope);
  }
  assert.ok(MANIFEST.oauthScopes.some((s) => /auth\/calendar(\.readonly)?$/.test(s)), 'calendar read scope');
  assert.equal(MANIFEST.addOns.common.name, 'confsync');
  assert.match(MANIFEST.addOns.common.logoUrl, /^https:\/\/[^/]*example\.com\//);
  assert.equal(MANIFEST.addOns.calendar.currentEventAccess, 'READ');
  const solutions = MANIFEST.addOns.calendar.conferenceSolution;
  assert.equal(solutions.length, 1);
  assert.equal(solutions[0].id, 'confsync');
  assert.equal(solutions[0].name, 'confsync');
  assert.match(solutions[0].logoUrl, /^https:\/\/[^/]*example\.com\//);
  assert.equal(solutions[0].onCreateFunction, 'onCreateConference');
  // Apps Script calls functions by their global name.
  assert.equal(typeof sandbox[solutions[0].onCreateFunction], 'function');
  assert.equal(typeof sandbox.onCalendarEventUpdated, 'function');
  assert.equal(MANIFEST.urlFetchWhitelist, undefined, 'the real host goes in at deploy time (README)');
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
  assert.deepEqual(params.headers, { Authorization: `Bearer ${API_KEY}` });
  const body = JSON.parse(params.payload);
  assert.deepEqual(body, {
    calendarId: CAL,
    eventId: EVENT,
    requestId: '00000000-0000-4000-8000-000000000001',
    solutionId: 'confsync',
  });
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

  const noUrl = load({ responses: [{ status: 401, body: { error: { conferenceErrorType: 'AUTHENTICATION', message: 'log in' } } }] });
  assert.deepEqual(noUrl.api.onCreateConference(createArg()), errorData('AUTHENTICATION'));
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

test('401 / 403 without a body -> AUTHENTICATION / PERMISSION_DENIED; other 4xx -> UNKNOWN', () => {
  for (const [status, type] of [[401, 'AUTHENTICATION'], [403, 'PERMISSION_DENIED'], [404, 'UNKNOWN'], [400, 'UNKNOWN']]) {
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
  const { api, fakes } = load({ responses: [{ status: 201, body: FULL_ANSWER }], triggers });
  assert.deepEqual(api.onCreateConference(createArg()), EXPECTED_DATA);
  assert.deepEqual(fakes.createAttempts, [], 'create() never attempted');
  assert.ok(fakes.logs.some((l) => l.level === 'warn' && /20/.test(l.text) && l.text.includes(CAL)), fakes.logText());

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
  assert.deepEqual(params.headers, { Authorization: `Bearer ${API_KEY}` });
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

  assert.ok(logged.includes('[redacted]'), 'the scenarios did try to log the key');
  assert.ok(!logged.includes(API_KEY), logged);
  assert.ok(!logged.includes(API_KEY.slice(0, 20)), 'no partial key either');
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
