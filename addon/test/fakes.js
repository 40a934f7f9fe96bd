'use strict';
// Fakes of the Apps Script services Code.js uses. Each createFakes() call is a fresh world:
// nothing is shared between tests.
//
// The fakes follow the Apps Script reference where it is specific: EntryPoint has no setLabel
// (only when `entryPointSetLabel: true`), setters take strings, enum setters take enum members,
// and builders return themselves for chaining. ConferenceDataBuilder.build() validates a little
// (an approximation of the real, undocumented validation) and returns a plain object.

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
  const requests = [];
  const queue = Array.isArray(opts.responses) ? [...opts.responses] : null;
  const UrlFetchApp = {
    requests,
    fetch(url, params) {
      // Copy through JSON so the record lives in this realm, not the script's vm context.
      requests.push({ url, params: params === undefined ? undefined : JSON.parse(JSON.stringify(params)) });
      let next;
      if (typeof opts.responses === 'function') next = opts.responses(url, params);
      else if (queue && queue.length) next = queue.shift();
      else throw new Error(`fake UrlFetchApp: no scripted response for ${url}`);
      if (typeof next === 'function') next = next(url, params);
      if (next && next.throw) throw next.throw;
      return httpResponse(next);
    },
  };

  // ---- ScriptApp -----------------------------------------------------------------------------
  const EventType = enumOf(['CLOCK', 'ON_OPEN', 'ON_EDIT', 'ON_FORM_SUBMIT', 'ON_CHANGE', 'ON_EVENT_UPDATED']);
  const TriggerSource = enumOf(['SPREADSHEETS', 'CLOCK', 'FORMS', 'DOCUMENTS', 'CALENDAR']);
  let nextTriggerId = 1;
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
  const triggers = (opts.triggers || []).map(makeTrigger);
  const createdTriggers = [];
  const createAttempts = [];
  const ScriptApp = {
    EventType,
    TriggerSource,
    getProjectTriggers: () => [...triggers],
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
    stringSetter(e, 'ConferenceError', 'setAuthenticationUrl', 'authenticationUrl');
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
    logText: () => logs.map((l) => `${l.level}: ${l.text}`).join('\n'),
  };
}

module.exports = { createFakes, httpResponse, ENTRY_POINT_TYPES, ERROR_TYPES };
