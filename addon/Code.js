/**
 * confsync companion add-on for Google Calendar (Apps Script, V8 runtime).
 *
 * A thin front for the confsync service:
 *  - onCreateConference(arg): the manifest's onCreateFunction. Asks confsync to create a
 *    meeting (POST /v1/conferences) and turns the answer into a ConferenceData, or into a
 *    ConferenceData carrying a ConferenceError. On success it makes sure this user has one
 *    EventUpdated trigger for the calendar.
 *  - onCalendarEventUpdated(e): that trigger's handler. Tells confsync that the calendar changed
 *    (POST /v1/calendars/{id}/sync); confsync does the incremental sync itself.
 *
 * Neither function ever throws: a throw out of onCreateFunction shows the user a generic failure
 * instead of our error type, and a throwing trigger only fills the execution log.
 *
 * Apps Script has no modules: every top-level name is global across the project's files.
 * Names ending in "_" are private (not runnable from the editor or google.script.run).
 * The block at the bottom exports the functions for the Node tests only.
 */

/** Conference solution ids declared in appsscript.json (addOns.calendar.conferenceSolution[].id). */
var CONFSYNC_SOLUTION_IDS_ = ['confsync'];
var CONFSYNC_DEFAULT_SOLUTION_ID_ = 'confsync';
/** conferenceSolution.name in appsscript.json; CONFSYNC_SOLUTION_NAME overrides it. */
var CONFSYNC_DEFAULT_SOLUTION_NAME_ = 'confsync';
/** Handler of the per-calendar installable trigger. */
var CONFSYNC_SYNC_HANDLER_ = 'onCalendarEventUpdated';
/** Apps Script allows 20 triggers per user per script. */
var CONFSYNC_MAX_TRIGGERS_ = 20;
/** How much of an unexpected response body goes into a log line. */
var CONFSYNC_LOG_BODY_CHARS_ = 300;

var CONFSYNC_ERROR_TYPES_ = [
  'AUTHENTICATION',
  'CONFERENCE_SOLUTION_FORBIDDEN',
  'PERMANENT',
  'PERMISSION_DENIED',
  'TEMPORARY',
  'UNKNOWN'
];

/** API entry point type -> ConferenceDataService.EntryPointType member. */
var CONFSYNC_ENTRY_POINT_TYPES_ = {
  video: 'VIDEO',
  phone: 'PHONE',
  sip: 'SIP',
  more: 'MORE'
};

/** API entry point field -> EntryPoint setter, applied when the field is present. */
var CONFSYNC_ENTRY_POINT_FIELDS_ = [
  ['pin', 'setPin'],
  ['accessCode', 'setAccessCode'],
  ['meetingCode', 'setMeetingCode'],
  ['passcode', 'setPasscode'],
  ['password', 'setPassword'],
  ['regionCode', 'setRegionCode']
];

/**
 * onCreateFunction of the "confsync" conference solution.
 *
 * @param {{eventData: {calendarId: string, eventId: string, conferenceData: (Object|undefined)}}} arg
 * @return {ConferenceData} the conference, or a ConferenceData with an error
 */
function onCreateConference(arg) {
  var eventData = (arg && arg.eventData) || {};
  var calendarId = eventData.calendarId;
  var eventId = eventData.eventId;
  var solutionId = confsyncSolutionId_(arg);
  var config = null;
  try {
    if (!confsyncIsNonEmptyString_(calendarId) || !confsyncIsNonEmptyString_(eventId)) {
      console.error('confsync: onCreateConference called without eventData.calendarId/eventId');
      return confsyncErrorData_(solutionId, 'PERMANENT');
    }
    config = confsyncReadConfig_();
    if (!config) {
      return confsyncErrorData_(solutionId, 'PERMANENT');
    }

    var payload = {
      calendarId: calendarId,
      eventId: eventId,
      requestId: confsyncRequestId_(calendarId, eventId),
      solutionId: solutionId
    };
    var response;
    try {
      response = UrlFetchApp.fetch(config.baseUrl + '/v1/conferences', {
        method: 'post',
        contentType: 'application/json',
        headers: { Authorization: 'Bearer ' + config.apiKey },
        payload: JSON.stringify(payload),
        muteHttpExceptions: true
      });
    } catch (err) {
      // DNS, TLS, timeouts, the UrlFetch quota: worth trying again later.
      console.error('confsync: POST /v1/conferences failed: ' + confsyncDescribe_(err, config));
      return confsyncErrorData_(solutionId, 'TEMPORARY');
    }

    var outcome = confsyncInterpretCreate_(response, config);
    if (outcome.errorType) {
      return confsyncErrorData_(solutionId, outcome.errorType, outcome.authenticationUrl);
    }

    var data;
    try {
      data = confsyncConferenceData_(solutionId, outcome.conference, config);
    } catch (err) {
      console.error('confsync: could not build ConferenceData from the answer: ' +
        confsyncDescribe_(err, config));
      return confsyncErrorData_(solutionId, 'UNKNOWN');
    }
    // Google's procedure: once a conference exists, make sure the calendar is watched.
    confsyncEnsureSyncTrigger_(calendarId);
    return data;
  } catch (err) {
    console.error('confsync: onCreateConference failed: ' + confsyncDescribe_(err, config));
    return confsyncErrorData_(solutionId, 'UNKNOWN');
  }
}

/**
 * Handler of the installable EventUpdated trigger (one per calendar). The event object carries
 * calendarId, authMode and triggerUid; it does not say which event changed, so confsync runs an
 * incremental sync of the whole calendar.
 *
 * @param {{calendarId: string, authMode: *, triggerUid: string}} e
 * @return {boolean} whether confsync accepted the sync request
 */
function onCalendarEventUpdated(e) {
  var config = null;
  try {
    var calendarId = e && e.calendarId;
    if (!confsyncIsNonEmptyString_(calendarId)) {
      console.error('confsync: onCalendarEventUpdated called without a calendarId');
      return false;
    }
    config = confsyncReadConfig_();
    if (!config) {
      return false;
    }
    var path = '/v1/calendars/' + encodeURIComponent(calendarId) + '/sync';
    var response = UrlFetchApp.fetch(config.baseUrl + path, {
      method: 'post',
      contentType: 'application/json',
      headers: { Authorization: 'Bearer ' + config.apiKey },
      payload: '{}',
      muteHttpExceptions: true
    });
    var code = response.getResponseCode();
    if (code >= 200 && code < 300) {
      return true;
    }
    console.error('confsync: POST ' + path + ' answered ' + code + ': ' +
      confsyncRedact_(confsyncBodySnippet_(response), config));
    return false;
  } catch (err) {
    console.error('confsync: calendar sync request failed: ' + confsyncDescribe_(err, config));
    return false;
  }
}

/**
 * Makes sure this user has an EventUpdated trigger for calendarId, created at most once.
 * Never throws. Triggers are per user and per script; at most 20 of them.
 *
 * @param {string} calendarId
 * @return {string} 'exists', 'created', 'limit' or 'failed'
 */
function confsyncEnsureSyncTrigger_(calendarId) {
  try {
    var triggers = ScriptApp.getProjectTriggers() || [];
    for (var i = 0; i < triggers.length; i++) {
      var t = triggers[i];
      if (t.getEventType() == ScriptApp.EventType.ON_EVENT_UPDATED &&
          t.getTriggerSourceId() == calendarId &&
          (typeof t.getHandlerFunction !== 'function' ||
            t.getHandlerFunction() === CONFSYNC_SYNC_HANDLER_)) {
        return 'exists';
      }
    }
    if (triggers.length >= CONFSYNC_MAX_TRIGGERS_) {
      console.warn('confsync: not watching calendar ' + calendarId + ': this user already has ' +
        triggers.length + ' triggers in this script (limit ' + CONFSYNC_MAX_TRIGGERS_ +
        '); confsync will not hear about its changes from this add-on');
      return 'limit';
    }
    ScriptApp.newTrigger(CONFSYNC_SYNC_HANDLER_)
      .forUserCalendar(calendarId)
      .onEventUpdated()
      .create();
    return 'created';
  } catch (err) {
    console.error('confsync: could not create the sync trigger for calendar ' + calendarId +
      ': ' + confsyncDescribe_(err, null));
    return 'failed';
  }
}

/**
 * Reads the Script Properties. Returns null (and logs why, never the key) when they are unusable.
 *
 * @return {?{baseUrl: string, apiKey: string, solutionName: string}}
 */
function confsyncReadConfig_() {
  var props = PropertiesService.getScriptProperties();
  var rawBase = props.getProperty('CONFSYNC_BASE_URL');
  var apiKey = props.getProperty('CONFSYNC_API_KEY');
  var solutionName = props.getProperty('CONFSYNC_SOLUTION_NAME');
  apiKey = typeof apiKey === 'string' ? apiKey.trim() : '';
  if (!apiKey) {
    console.error('confsync: Script Property CONFSYNC_API_KEY is not set');
    return null;
  }
  var baseUrl = confsyncNormaliseBaseUrl_(rawBase);
  if (!baseUrl) {
    console.error('confsync: Script Property CONFSYNC_BASE_URL is not set or not an https URL ' +
      '(expected e.g. https://confsync.example.com or https://host/prefix)');
    return null;
  }
  solutionName = typeof solutionName === 'string' ? solutionName.trim() : '';
  return {
    baseUrl: baseUrl,
    apiKey: apiKey,
    solutionName: solutionName || CONFSYNC_DEFAULT_SOLUTION_NAME_
  };
}

/**
 * "https://host/prefix/" -> "https://host/prefix". Null for anything but an absolute https URL
 * without query or fragment (UrlFetchApp reaches public hosts only; the API key must not travel
 * in clear text).
 */
function confsyncNormaliseBaseUrl_(raw) {
  if (typeof raw !== 'string') {
    return null;
  }
  var url = raw.trim().replace(/\/+$/, '');
  if (!/^https:\/\/[^\s\/?#@]+(\/[^\s?#]*)?$/i.test(url)) {
    return null;
  }
  return url;
}

/**
 * The solution id to build with. The argument Calendar passes documents only eventData.calendarId
 * and eventData.eventId; whether it ever names the chosen solution is not documented (unsure), so
 * a solution id is taken from it only where it is one of ours, else the manifest's only id.
 */
function confsyncSolutionId_(arg) {
  var eventData = (arg && arg.eventData) || {};
  var conferenceData = eventData.conferenceData || {};
  var candidates = [
    arg && arg.conferenceSolutionId,
    eventData.conferenceSolutionId,
    conferenceData.conferenceSolutionId,
    conferenceData.conferenceSolution && conferenceData.conferenceSolution.key &&
      conferenceData.conferenceSolution.key.solutionId
  ];
  for (var i = 0; i < candidates.length; i++) {
    if (CONFSYNC_SOLUTION_IDS_.indexOf(candidates[i]) >= 0) {
      return candidates[i];
    }
  }
  return CONFSYNC_DEFAULT_SOLUTION_ID_;
}

/** A fresh UUID when Utilities is there; otherwise one derived from the calendar and event. */
function confsyncRequestId_(calendarId, eventId) {
  if (typeof Utilities !== 'undefined' && Utilities && typeof Utilities.getUuid === 'function') {
    return String(Utilities.getUuid());
  }
  return 'cs-' + encodeURIComponent(calendarId) + ':' + encodeURIComponent(eventId);
}

/**
 * Classifies the answer to POST /v1/conferences.
 *
 * @return {{conference: Object}|{errorType: string, authenticationUrl: (string|undefined)}}
 */
function confsyncInterpretCreate_(response, config) {
  var code = response.getResponseCode();
  var text = response.getContentText();
  var body;
  var parsed = false;
  try {
    body = JSON.parse(text);
    parsed = true;
  } catch (err) {
    parsed = false;
  }
  var apiError = parsed && body && typeof body === 'object' && body.error &&
    typeof body.error === 'object' ? body.error : null;

  if (code >= 200 && code < 300 && !apiError) {
    if (!parsed || !body || typeof body !== 'object' || Array.isArray(body)) {
      console.error('confsync: POST /v1/conferences answered ' + code + ' with a body that is ' +
        'not a JSON object: ' + confsyncRedact_(confsyncSnippet_(text), config));
      return { errorType: 'UNKNOWN' };
    }
    return { conference: body };
  }

  if (apiError) {
    var type = CONFSYNC_ERROR_TYPES_.indexOf(apiError.conferenceErrorType) >= 0 ?
      apiError.conferenceErrorType : 'UNKNOWN';
    console.error('confsync: POST /v1/conferences answered ' + code + ' ' +
      String(apiError.conferenceErrorType) + ': ' +
      confsyncRedact_(confsyncSnippet_(String(apiError.message || '')), config));
    var result = { errorType: type };
    if (type === 'AUTHENTICATION' && confsyncIsNonEmptyString_(apiError.authenticationUrl)) {
      result.authenticationUrl = apiError.authenticationUrl;
    }
    return result;
  }

  // No usable error body: classify by status.
  console.error('confsync: POST /v1/conferences answered ' + code + ': ' +
    confsyncRedact_(confsyncSnippet_(text), config));
  if (code >= 500 || code === 408 || code === 429) {
    return { errorType: 'TEMPORARY' };
  }
  if (code === 401) {
    return { errorType: 'AUTHENTICATION' };
  }
  if (code === 403) {
    return { errorType: 'PERMISSION_DENIED' };
  }
  return { errorType: 'UNKNOWN' };
}

/**
 * Maps a successful answer 1:1 onto ConferenceDataService. Throws when the answer cannot make a
 * valid conference (no conferenceId, no joinable entry point): the caller reports UNKNOWN.
 */
function confsyncConferenceData_(solutionId, conference, config) {
  var conferenceId = conference.conferenceId;
  if (typeof conferenceId === 'number') {
    conferenceId = String(conferenceId);
  }
  if (!confsyncIsNonEmptyString_(conferenceId)) {
    throw new Error('the answer has no conferenceId');
  }

  var solution = conference.conferenceSolution;
  if (solution && confsyncIsNonEmptyString_(solution.name) && solution.name !== config.solutionName) {
    // The engine recognises our conferences by conferenceSolution.name, which Calendar takes from
    // the manifest; a mismatch means confsync would not sync this conference.
    console.warn('confsync: the service names the solution "' + solution.name +
      '" but this add-on is "' + config.solutionName + '" (CONFSYNC_SOLUTION_NAME / manifest)');
  }

  var builder = ConferenceDataService.newConferenceDataBuilder()
    .setConferenceSolutionId(solutionId)
    .setConferenceId(conferenceId);

  var entryPoints = Array.isArray(conference.entryPoints) ? conference.entryPoints : [];
  var joinable = 0;
  for (var i = 0; i < entryPoints.length; i++) {
    var entryPoint = confsyncEntryPoint_(entryPoints[i]);
    if (!entryPoint) {
      continue;
    }
    builder.addEntryPoint(entryPoint.value);
    if (entryPoint.type !== 'MORE') {
      joinable++;
    }
  }
  if (joinable === 0) {
    // Calendar rejects a conference without entry points, or with only a "more" one.
    throw new Error('the answer has no video, phone or sip entry point');
  }

  var params = conference.parameters && conference.parameters.addOnParameters &&
    conference.parameters.addOnParameters.parameters;
  if (params && typeof params === 'object' && !Array.isArray(params)) {
    var keys = Object.keys(params);
    for (var k = 0; k < keys.length; k++) {
      var value = params[keys[k]];
      if (value === null || value === undefined || typeof value === 'object') {
        continue;
      }
      builder.addConferenceParameter(ConferenceDataService.newConferenceParameter()
        .setKey(keys[k])
        .setValue(String(value)));
    }
  }

  if (confsyncIsNonEmptyString_(conference.notes)) {
    builder.setNotes(conference.notes);
  }
  return builder.build();
}

/**
 * One API entry point -> {type, value: EntryPoint}, or null (logged) for an unknown type or a
 * missing uri. Unknown fields are ignored.
 */
function confsyncEntryPoint_(ep) {
  if (!ep || typeof ep !== 'object') {
    return null;
  }
  var typeName = CONFSYNC_ENTRY_POINT_TYPES_[ep.entryPointType];
  if (!typeName) {
    console.warn('confsync: skipping an entry point of unknown type ' + String(ep.entryPointType));
    return null;
  }
  if (!confsyncIsNonEmptyString_(ep.uri)) {
    console.warn('confsync: skipping a ' + ep.entryPointType + ' entry point without a uri');
    return null;
  }
  var entryPoint = ConferenceDataService.newEntryPoint()
    .setEntryPointType(ConferenceDataService.EntryPointType[typeName])
    .setUri(ep.uri);
  // Apps Script's EntryPoint has no setLabel (Calendar derives the label from the uri), so the
  // label is set only where the runtime offers it; calling a missing method would throw.
  if (confsyncIsNonEmptyString_(ep.label) && typeof entryPoint.setLabel === 'function') {
    entryPoint = entryPoint.setLabel(ep.label);
  }
  for (var i = 0; i < CONFSYNC_ENTRY_POINT_FIELDS_.length; i++) {
    var field = CONFSYNC_ENTRY_POINT_FIELDS_[i][0];
    var setter = CONFSYNC_ENTRY_POINT_FIELDS_[i][1];
    var value = ep[field];
    if (typeof value === 'number') {
      value = String(value);
    }
    if (confsyncIsNonEmptyString_(value)) {
      entryPoint = entryPoint[setter](value);
    }
  }
  return { type: typeName, value: entryPoint };
}

/** A ConferenceData that carries only an error of the given type. */
function confsyncErrorData_(solutionId, type, authenticationUrl) {
  var error = ConferenceDataService.newConferenceError()
    .setConferenceErrorType(ConferenceDataService.ConferenceErrorType[type]);
  if (authenticationUrl) {
    error = error.setAuthenticationUrl(authenticationUrl);
  }
  return ConferenceDataService.newConferenceDataBuilder()
    .setConferenceSolutionId(solutionId)
    .setError(error)
    .build();
}

function confsyncIsNonEmptyString_(value) {
  return typeof value === 'string' && value.length > 0;
}

function confsyncSnippet_(text) {
  text = String(text === undefined || text === null ? '' : text);
  return text.length > CONFSYNC_LOG_BODY_CHARS_ ?
    text.slice(0, CONFSYNC_LOG_BODY_CHARS_) + '...' : text;
}

function confsyncBodySnippet_(response) {
  try {
    return confsyncSnippet_(response.getContentText());
  } catch (err) {
    return '(no body)';
  }
}

/** An exception as one log-safe line. */
function confsyncDescribe_(err, config) {
  var text = err && err.message ? String(err.message) : String(err);
  return confsyncRedact_(text, config);
}

/** Removes the API key (and any bearer credential) from text that is about to be logged. */
function confsyncRedact_(text, config) {
  text = String(text);
  var key = config && config.apiKey;
  if (!key) {
    try {
      var props = PropertiesService.getScriptProperties();
      key = props.getProperty('CONFSYNC_API_KEY');
      key = typeof key === 'string' ? key.trim() : '';
    } catch (err) {
      key = '';
    }
  }
  if (key) {
    text = text.split(key).join('[redacted]');
  }
  return text.replace(/(Bearer\s+)[^\s"',;]+/gi, '$1[redacted]');
}

if (typeof module !== 'undefined') {
  module.exports = {
    onCreateConference: onCreateConference,
    onCalendarEventUpdated: onCalendarEventUpdated,
    confsyncEnsureSyncTrigger_: confsyncEnsureSyncTrigger_,
    confsyncNormaliseBaseUrl_: confsyncNormaliseBaseUrl_,
    confsyncReadConfig_: confsyncReadConfig_,
    confsyncRequestId_: confsyncRequestId_
  };
}
