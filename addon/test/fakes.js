'use strict';
// Fakes of the Apps Script services Code.js uses. Each createFakes() call is a fresh world:
// nothing is shared between tests.
//
// The fakes follow the Apps Script reference where it is specific: EntryPoint has no setLabel
// (only when `entryPointSetLabel: true`), setters take strings, enum setters take enum members,
// and builders return themselves for chaining. ConferenceDataBuilder.build() validates a little
// (an approximation of the real, undocumented validation) and returns a plain object.
// Also as documented:
// - ConferenceError.setAuthenticationUrl throws unless the URL is a valid http/https URL of at
//   most 1800 characters (Apps Script reference, ConferenceError).
// - UrlFetchApp.fetch throws for a 4xx/5xx answer unless muteHttpExceptions is true (default
//   false), and refuses URLs outside the manifest's urlFetchWhitelist when one is given
//   (reference, UrlFetchApp; manifest "Allowlist URLs": prefix match, case-sensitive path).
// - TriggerBuilder.create() throws past 20 triggers (Quotas: 20 triggers per user per script);
//   ScriptApp.getProjectTriggers() lists the current user's triggers; deleteTrigger removes one.
// - ScriptApp.getIdentityToken() returns the user's OpenID Connect ID token (a JWT), or null
//   when the openid scope is missing (option identityToken: null).
// - LockService: tryLock(ms) -> boolean, waitLock(ms) throws on timeout, releaseLock, hasLock.
//   Executions are sequential here, so a lock held by another (nested) execution is a timeout.

const ENTRY_POINT_TYPES = ['VIDEO', 'PHONE', 'SIP', 'MORE'];
const ERROR_TYPES = [
  'AUTHENTICATION',
  'CONFERENCE_SOLUTION_FORBIDDEN',
  'PERMANENT',
  'PERMISSION_DENIED',
  'TEMPORARY',
  'UNKNOWN',
];

function enumOf(names) {
  const e = {};
  for (const n of names) e[n] = n;
  return Object.freeze(e);
}

/** A JWT-shaped token with the claims Google's ID tokens carry (unsigned: for shape only). */
function fakeIdToken(claims = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const payload = {
    iss: 'https://accounts.google.com',
    aud: '123456789012-fake.apps.googleusercontent.com',
    sub: '110169484474386276334',
    email: 'alice@example.com',
    email_verified: true,
    iat: 1700000000,
    exp: 1700003600,
    ...claims,
  };
  return `${b64({ alg: 'RS256', kid: 'fake', typ: 'JWT' })}.${b64(payload)}.c2lnbmF0dXJl`;
}

/** ConferenceError.setAuthenticationUrl's documented check. */
function checkAuthenticationUrl(value) {
  let url = null;
  try {
    url = new URL(value);
  } catch (err) {
    url = null;
  }
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:') || !url.hostname) {
    throw new Error(`Invalid argument: authenticationUrl (not a valid http/https URL): ${value}`);
  }
  if (value.length > 1800) {
    throw new Error(`Invalid argument: authenticationUrl is longer than 1800 characters (${value.length})`);
  }
}

/**
 * Whether url matches one of the allowlist prefixes (manifest "Allowlist URLs": the URL equals
 * the prefix or is its child, case-sensitive; one leading "*." matches at least one subdomain).
 */
function allowlisted(url, prefixes) {
  const under = (u, p) => u === p || (u.startsWith(p) && (p.endsWith('/') || /^[/?#]/.test(u.slice(p.length))));
  return prefixes.some((prefix) => {
    if (prefix.startsWith('https://*.')) {
      const rest = prefix.slice('https://*.'.length);
      const restHost = rest.split('/')[0];
      const m = /^https:\/\/([^/?#]+)(.*)$/.exec(url);
      return !!m && m[1].endsWith(`.${restHost}`) && under(`${restHost}${m[2]}`, rest);
    }
    return under(url, prefix);
  });
}

function requireString(what, value) {
  if (typeof value !== 'string') {
    throw new TypeError(`${what} expects a string, got ${typeof value}`);
  }
}

/** An HTTPResponse as UrlFetchApp.fetch returns it. */
function httpResponse({ status = 200, body = '', headers = {} } = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return {
    getResponseCode: () => status,
    getContentText: () => text,
    getHeaders: () => ({ ...headers }),
  };
}

/**
 * @param {object} [opts]
 * @param {object} [opts.properties] Script Properties (name -> value)
 * @param {Array|Function} [opts.responses] scripted answers for UrlFetchApp.fetch, consumed in
 *   order; each is {status, body, headers}, {throw: Error}, or a function (url, params) -> one.
 * @param {Array} [opts.triggers] existing triggers: {handler, eventType, sourceId}
 * @param {boolean} [opts.entryPointSetLabel] give EntryPoint a setLabel method
 * @param {boolean} [opts.utilities] provide Utilities (default true)
 * @param {Error} [opts.triggerCreateError] make TriggerBuilder.create() throw this
 * @param {string|null|Error} [opts.identityToken] what ScriptApp.getIdentityToken() gives
 *   (default: a JWT-shaped token; null: no openid scope; an Error: it throws)
 * @param {string[]} [opts.urlFetchWhitelist] the manifest's allowlist; fetch refuses other URLs
 * @param {boolean} [opts.locking] false: every tryLock succeeds (to show what the lock prevents)
 * @param {Function} [opts.onGetProjectTriggers] called inside getProjectTriggers (to interleave
 *   another execution at that point)
 * @param {object} [opts.shared] another createFakes() result whose triggers, lock and requests
 *   this world shares (a second execution of the same user)
 */
function createFakes(opts = {}) {
  const calls = []; // every ConferenceDataService call: [object, method, ...args]
  const logs = []; // {level, text}

  // ---- console -------------------------------------------------------------------------------
  const fakeConsole = {};
  for (const level of ['log', 'info', 'warn', 'error']) {
    fakeConsole[level] = (...args) => {
      logs.push({ level, text: args.map((a) => (typeof a === 'string' ? a : String(a))).join(' ') });
    };
  }

  // ---- PropertiesService ---------------------------------------------------------------------
  const properties = { ...(opts.properties || {}) };
  const PropertiesService = {
    getScriptProperties: () => ({
      getProperty: (name) => (Object.prototype.hasOwnProperty.call(properties, name) ? properties[name] : null),
      getProperties: () => ({ ...properties }),
    }),
  };

  // ---- UrlFetchApp ---------------------------------------------------------------------------
  const shared = opts.shared || null;
  const requests = shared ? shared.requests : [];
  const queue = Array.isArray(opts.responses) ? [...opts.responses] : null;
  const UrlFetchApp = {
    requests,
    fetch(url, params) {
      // Copy through JSON so the record lives in this realm, not the script's vm context.
      requests.push({ url, params: params === undefined ? undefined : JSON.parse(JSON.stringify(params)) });
      if (opts.urlFetchWhitelist && !allowlisted(url, opts.urlFetchWhitelist)) {
        throw new Error(`Exception: URL not allowed by the script's urlFetchWhitelist: ${url}`);
      }
      let next;
      if (typeof opts.responses === 'function') next = opts.responses(url, params);
      else if (queue && queue.length) next = queue.shift();
      else throw new Error(`fake UrlFetchApp: no scripted response for ${url}`);
      if (typeof next === 'function') next = next(url, params);
      if (next && next.throw) throw next.throw;
      const response = httpResponse(next);
      const status = response.getResponseCode();
      if (status >= 400 && !(params && params.muteHttpExceptions === true)) {
        // What the real service does without muteHttpExceptions: the answer is lost in a throw.
        throw new Error(`Exception: Request failed for ${url} returned code ${status}. Truncated server response: ` +
          `${response.getContentText().slice(0, 100)} (use muteHttpExceptions option to examine full response)`);
      }
      return response;
    },
  };

  // ---- LockService ---------------------------------------------------------------------------
  const lockState = shared ? shared.lockState : { holder: null, acquired: 0, refused: 0 };
  function newLock() {
    const lock = {
      tryLock(timeoutInMillis) {
        if (typeof timeoutInMillis !== 'number') throw new TypeError('tryLock expects milliseconds');
        if (opts.locking === false || lockState.holder === null || lockState.holder === lock) {
          if (opts.locking !== false) lockState.holder = lock;
          lockState.acquired++;
          return true;
        }
        lockState.refused++;
        return false;
      },
      waitLock(timeoutInMillis) {
        if (!lock.tryLock(timeoutInMillis)) {
          throw new Error('Lock timeout: another process was holding the lock for too long.');
        }
      },
      hasLock: () => lockState.holder === lock,
      releaseLock() {
        if (lockState.holder === lock) lockState.holder = null;
      },
    };
    return lock;
  }
  const LockService = {
    getUserLock: newLock,
    getScriptLock: newLock,
    getDocumentLock: () => null,
  };

  // ---- ScriptApp -----------------------------------------------------------------------------
  const EventType = enumOf(['CLOCK', 'ON_OPEN', 'ON_EDIT', 'ON_FORM_SUBMIT', 'ON_CHANGE', 'ON_EVENT_UPDATED']);
  const TriggerSource = enumOf(['SPREADSHEETS', 'CLOCK', 'FORMS', 'DOCUMENTS', 'CALENDAR']);
  let nextTriggerId = shared ? 1000 : 1;
  function makeTrigger({ handler, eventType, sourceId, source }) {
    const uid = String(nextTriggerId++);
    return {
      getHandlerFunction: () => handler,
      getEventType: () => eventType,
      getTriggerSource: () => source || TriggerSource.CALENDAR,
      getTriggerSourceId: () => sourceId,
      getUniqueId: () => uid,
    };
  }
  const triggers = shared ? shared.triggers : (opts.triggers || []).map(makeTrigger);
  const createdTriggers = shared ? shared.createdTriggers : [];
  const createAttempts = shared ? shared.createAttempts : [];
  const deletedTriggers = shared ? shared.deletedTriggers : [];
  const identityToken = opts.identityToken === undefined ? fakeIdToken() : opts.identityToken;
  const ScriptApp = {
    EventType,
    TriggerSource,
    getProjectTriggers() {
      const snapshot = [...triggers];
      if (opts.onGetProjectTriggers) opts.onGetProjectTriggers();
      return snapshot;
    },
    deleteTrigger(trigger) {
      const i = triggers.findIndex((t) => t.getUniqueId() === trigger.getUniqueId());
      if (i < 0) throw new Error('Trigger not found');
      deletedTriggers.push({ handler: trigger.getHandlerFunction(), calendarId: trigger.getTriggerSourceId(), uid: trigger.getUniqueId() });
      triggers.splice(i, 1);
    },
    getIdentityToken() {
      if (identityToken instanceof Error) throw identityToken;
      return identityToken;
    },
    newTrigger(handler) {
      requireString('ScriptApp.newTrigger', handler);
      return {
        forUserCalendar(calendarId) {
          requireString('TriggerBuilder.forUserCalendar', calendarId);
          return {
            onEventUpdated() {
              return {
                create() {
                  createAttempts.push({ handler, calendarId });
                  if (opts.triggerCreateError) throw opts.triggerCreateError;
                  if (triggers.length >= 20) {
                    throw new Error('This script has too many triggers. Triggers must be deleted from the script before more can be added.');
                  }
                  const t = makeTrigger({ handler, eventType: EventType.ON_EVENT_UPDATED, sourceId: calendarId });
                  triggers.push(t);
                  createdTriggers.push({ handler, calendarId });
                  return t;
                },
              };
            },
          };
        },
      };
    },
  };

  // ---- ConferenceDataService -----------------------------------------------------------------
  const EntryPointType = enumOf(ENTRY_POINT_TYPES);
  const ConferenceErrorType = enumOf(ERROR_TYPES);
  const EntryPointFeature = enumOf(['UNKNOWN_FEATURE', 'TOLL', 'TOLL_FREE']);
  const DATA = Symbol('data');

  function stringSetter(obj, kind, method, field) {
    obj[method] = function (value) {
      calls.push([kind, method, value]);
      requireString(`${kind}.${method}`, value);
      this[DATA][field] = value;
      return this;
    };
  }

  function newEntryPoint() {
    calls.push(['ConferenceDataService', 'newEntryPoint']);
    const ep = { [DATA]: {} };
    ep.setEntryPointType = function (type) {
      calls.push(['EntryPoint', 'setEntryPointType', type]);
      if (!ENTRY_POINT_TYPES.includes(type)) throw new TypeError(`not an EntryPointType: ${type}`);
      this[DATA].entryPointType = type;
      return this;
    };
    for (const [method, field] of [
      ['setUri', 'uri'],
      ['setPin', 'pin'],
      ['setAccessCode', 'accessCode'],
      ['setMeetingCode', 'meetingCode'],
      ['setPasscode', 'passcode'],
      ['setPassword', 'password'],
      ['setRegionCode', 'regionCode'],
    ]) {
      stringSetter(ep, 'EntryPoint', method, field);
    }
    if (opts.entryPointSetLabel) stringSetter(ep, 'EntryPoint', 'setLabel', 'label');
    ep.addFeature = function (feature) {
      calls.push(['EntryPoint', 'addFeature', feature]);
      (this[DATA].features = this[DATA].features || []).push(feature);
      return this;
    };
    return ep;
  }

  function newConferenceParameter() {
    calls.push(['ConferenceDataService', 'newConferenceParameter']);
    const p = { [DATA]: {} };
    stringSetter(p, 'ConferenceParameter', 'setKey', 'key');
    stringSetter(p, 'ConferenceParameter', 'setValue', 'value');
    return p;
  }

  function newConferenceError() {
    calls.push(['ConferenceDataService', 'newConferenceError']);
    const e = { [DATA]: {} };
    e.setConferenceErrorType = function (type) {
      calls.push(['ConferenceError', 'setConferenceErrorType', type]);
      if (!ERROR_TYPES.includes(type)) throw new TypeError(`not a ConferenceErrorType: ${type}`);
      this[DATA].conferenceErrorType = type;
      return this;
    };
    e.setAuthenticationUrl = function (value) {
      calls.push(['ConferenceError', 'setAuthenticationUrl', value]);
      requireString('ConferenceError.setAuthenticationUrl', value);
      checkAuthenticationUrl(value);
      this[DATA].authenticationUrl = value;
      return this;
    };
    return e;
  }

  function newConferenceDataBuilder() {
    calls.push(['ConferenceDataService', 'newConferenceDataBuilder']);
    const state = { entryPoints: [], conferenceParameters: [] };
    const b = {};
    for (const [method, field] of [
      ['setConferenceSolutionId', 'conferenceSolutionId'],
      ['setConferenceId', 'conferenceId'],
      ['setNotes', 'notes'],
    ]) {
      b[method] = function (value) {
        calls.push(['ConferenceDataBuilder', method, value]);
        requireString(`ConferenceDataBuilder.${method}`, value);
        state[field] = value;
        return b;
      };
    }
    b.addEntryPoint = function (ep) {
      calls.push(['ConferenceDataBuilder', 'addEntryPoint']);
      if (!ep || !ep[DATA]) throw new TypeError('addEntryPoint expects an EntryPoint');
      state.entryPoints.push({ ...ep[DATA] });
      return b;
    };
    b.addConferenceParameter = function (p) {
      calls.push(['ConferenceDataBuilder', 'addConferenceParameter']);
      if (!p || !p[DATA]) throw new TypeError('addConferenceParameter expects a ConferenceParameter');
      state.conferenceParameters.push({ ...p[DATA] });
      return b;
    };
    b.setError = function (e) {
      calls.push(['ConferenceDataBuilder', 'setError']);
      if (!e || !e[DATA]) throw new TypeError('setError expects a ConferenceError');
      state.error = { ...e[DATA] };
      return b;
    };
    b.build = function () {
      calls.push(['ConferenceDataBuilder', 'build']);
      if (state.error) {
        if (!state.error.conferenceErrorType) throw new Error('ConferenceError without a type');
        if (state.entryPoints.length || state.conferenceId) {
          throw new Error('ConferenceData with both an error and a conference');
        }
      } else {
        if (!state.conferenceId) throw new Error('ConferenceData without a conference id');
        if (!state.entryPoints.length) throw new Error('ConferenceData without entry points');
        for (const ep of state.entryPoints) {
          if (!ep.entryPointType || !ep.uri) throw new Error('EntryPoint without type or uri');
        }
        for (const p of state.conferenceParameters) {
          if (p.key === undefined || p.value === undefined) throw new Error('ConferenceParameter without key or value');
        }
      }
      const out = {};
      for (const k of ['conferenceSolutionId', 'conferenceId', 'notes']) {
        if (state[k] !== undefined) out[k] = state[k];
      }
      if (state.entryPoints.length) out.entryPoints = state.entryPoints.map((e) => ({ ...e }));
      if (state.conferenceParameters.length) out.conferenceParameters = state.conferenceParameters.map((p) => ({ ...p }));
      if (state.error) out.error = { ...state.error };
      return out;
    };
    return b;
  }

  const ConferenceDataService = {
    EntryPointType,
    ConferenceErrorType,
    EntryPointFeature,
    newConferenceDataBuilder,
    newEntryPoint,
    newConferenceParameter,
    newConferenceError,
  };

  // ---- Utilities -----------------------------------------------------------------------------
  let uuidCounter = 0;
  const Utilities = {
    getUuid: () => `00000000-0000-4000-8000-${String(++uuidCounter).padStart(12, '0')}`,
  };

  const globals = {
    UrlFetchApp,
    PropertiesService,
    ScriptApp,
    LockService,
    ConferenceDataService,
    console: fakeConsole,
  };
  if (opts.utilities !== false) globals.Utilities = Utilities;

  return {
    globals,
    calls,
    logs,
    requests,
    properties,
    triggers,
    createdTriggers,
    createAttempts,
    deletedTriggers,
    lockState,
    identityToken,
    logText: () => logs.map((l) => `${l.level}: ${l.text}`).join('\n'),
  };
}

module.exports = { createFakes, httpResponse, fakeIdToken, allowlisted, ENTRY_POINT_TYPES, ERROR_TYPES };
