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
 * Every call to confsync carries two credentials: `Authorization: Bearer <api key>` (which
 * deployment of the add-on is calling) and `X-Confsync-Identity: <OpenID Connect ID token>` (which
 * Google user it runs for: ScriptApp.getIdentityToken(), scope `openid`, plus `userinfo.email` for
 * the email claim). The token's `aud` is this script's OAuth client id.
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
/** Apps Script allows 20 triggers per user per script (Quotas for Google Services: Triggers). */
var CONFSYNC_MAX_TRIGGERS_ = 20;
/**
 * How long an execution waits for this user's lock around trigger changes. Short: the add-on's
 * callback has 30 s in all, and the backend may take up to its own 10 s deadline.
 */
var CONFSYNC_LOCK_WAIT_MS_ = 5000;
/** The header carrying the user's OpenID Connect ID token (a compact JWT, no "Bearer"). */
var CONFSYNC_IDENTITY_HEADER_ = 'X-Confsync-Identity';
/** ConferenceError.setAuthenticationUrl: at most 1800 characters (it throws beyond). */
var CONFSYNC_AUTH_URL_MAX_CHARS_ = 1800;
/** ConferenceDataBuilder.setNotes: at most 2048 characters. */
var CONFSYNC_NOTES_MAX_CHARS_ = 2048;
/**
 * Added to the conference's notes when this user's triggers are at the limit, so the organizer
 * learns it (onCreateFunction can return nothing but ConferenceData). Every guest reads notes:
 * it says nothing about the user beyond the limit.
 */
var CONFSYNC_TRIGGER_LIMIT_NOTE_ = 'confsync: the add-on could not watch this calendar for ' +
  'changes (Apps Script allows 20 triggers per user). The confsync service still keeps this ' +
  'meeting in step with the event.';
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
    if (!confsyncAttachIdentity_(config)) {
      return confsyncErrorData_(solutionId, 'PERMANENT');
    }

    var payload = {
      calendarId: calendarId,
      eventId: eventId,
      requestId: confsyncRequestId_(calendarId, eventId),
      solutionId: solutionId
    };
    // Exactly one request per execution, never a retry loop: Calendar gives this callback 30 s,
    // the service answers TEMPORARY within its own deadline, and the user's next attempt (same
    // requestId, same event) resumes the same create on the service.
    var response;
    try {
      response = UrlFetchApp.fetch(config.baseUrl + '/v1/conferences', {
        method: 'post',
        contentType: 'application/json',
        headers: confsyncHeaders_(config),
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
    if (confsyncEnsureSyncTrigger_(calendarId) === 'limit') {
      // Tell the organizer where they will look: the conference's notes.
      try {
        data = confsyncConferenceData_(solutionId, outcome.conference, config,
          CONFSYNC_TRIGGER_LIMIT_NOTE_);
      } catch (err) {
        console.error('confsync: could not add the trigger-limit note: ' +
          confsyncDescribe_(err, config));
      }
    }
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
 * When confsync answers 404 for the calendar (it has forgotten it: no conferences of ours any
 * more), the trigger is removed: otherwise every change on that calendar would cost a UrlFetch
 * call for nothing, and the trigger would hold one of this user's 20 slots.
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
    if (!confsyncAttachIdentity_(config)) {
      return false;
    }
    var path = '/v1/calendars/' + encodeURIComponent(calendarId) + '/sync';
    var response = UrlFetchApp.fetch(config.baseUrl + path, {
      method: 'post',
      contentType: 'application/json',
      headers: confsyncHeaders_(config),
      payload: '{}',
      muteHttpExceptions: true
    });
    var code = response.getResponseCode();
    if (code >= 200 && code < 300) {
      return true;
    }
    if (code === 404 && confsyncCalendarForgotten_(response, calendarId)) {
      var removed = confsyncRemoveSyncTriggers_(calendarId, e.triggerUid);
      console.warn('confsync: the service does not know calendar ' + calendarId +
        ' (no conferences of ours); removed ' + removed + ' sync trigger(s) for it');
      return false;
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
 * Never throws. Triggers are per user and per script, at most 20 of them; the check and the
 * create run under this user's lock (LockService.getUserLock), so two executions of the same
 * user (two conferences created at once) cannot both create one. Other users' triggers are
 * theirs (getProjectTriggers lists the current user's only), so a user lock is enough.
 *
 * @param {string} calendarId
 * @return {string} 'exists', 'created', 'limit', 'busy' (lock not obtained) or 'failed'
 */
function confsyncEnsureSyncTrigger_(calendarId) {
  var lock = null;
  try {
    lock = LockService.getUserLock();
    if (!lock.tryLock(CONFSYNC_LOCK_WAIT_MS_)) {
      lock = null;
      console.warn('confsync: not checking the sync trigger for calendar ' + calendarId +
        ': another execution of this user holds the trigger lock; the next conference checks again');
      return 'busy';
    }
    var triggers = ScriptApp.getProjectTriggers() || [];
    if (confsyncSyncTriggersOf_(triggers, calendarId, null).length > 0) {
      return 'exists';
    }
    if (triggers.length >= CONFSYNC_MAX_TRIGGERS_) {
      confsyncWarnTriggerLimit_(calendarId, triggers.length);
      return 'limit';
    }
    try {
      ScriptApp.newTrigger(CONFSYNC_SYNC_HANDLER_)
        .forUserCalendar(calendarId)
        .onEventUpdated()
        .create();
    } catch (err) {
      // The count above can be stale (triggers made elsewhere); ScriptApp's own refusal
      // ("too many triggers") is the authority.
      if (/too many triggers/i.test(confsyncDescribe_(err, null))) {
        confsyncWarnTriggerLimit_(calendarId, triggers.length);
        return 'limit';
      }
      throw err;
    }
    return 'created';
  } catch (err) {
    console.error('confsync: could not create the sync trigger for calendar ' + calendarId +
      ': ' + confsyncDescribe_(err, null));
    return 'failed';
  } finally {
    confsyncRelease_(lock);
  }
}

/** The operator's log line for a calendar left unwatched by the trigger limit. */
function confsyncWarnTriggerLimit_(calendarId, count) {
  console.warn('confsync: trigger limit reached: not watching calendar ' + calendarId +
    ' for this user (' + count + ' triggers in this script, limit ' + CONFSYNC_MAX_TRIGGERS_ +
    '); the service\'s push channels and periodic sync keep it in step');
}

/**
 * Removes this user's sync triggers for calendarId (the firing one, by its unique id, and any
 * duplicate). Under the same user lock as creation. Never throws.
 *
 * @return {number} how many were removed
 */
function confsyncRemoveSyncTriggers_(calendarId, triggerUid) {
  var lock = null;
  var removed = 0;
  try {
    lock = LockService.getUserLock();
    if (!lock.tryLock(CONFSYNC_LOCK_WAIT_MS_)) {
      lock = null;
      console.warn('confsync: could not take the trigger lock to remove the trigger of calendar ' +
        calendarId + '; the next change tries again');
      return 0;
    }
    var matching = confsyncSyncTriggersOf_(ScriptApp.getProjectTriggers() || [], calendarId,
      triggerUid);
    for (var i = 0; i < matching.length; i++) {
      ScriptApp.deleteTrigger(matching[i]);
      removed++;
    }
  } catch (err) {
    console.error('confsync: could not remove the sync trigger of calendar ' + calendarId + ': ' +
      confsyncDescribe_(err, null));
  } finally {
    confsyncRelease_(lock);
  }
  return removed;
}

/**
 * Our EventUpdated triggers for calendarId (handler onCalendarEventUpdated: an old trigger of
 * the seed script, handler syncEvents, is not ours), plus the trigger whose unique id is
 * triggerUid when given.
 */
function confsyncSyncTriggersOf_(triggers, calendarId, triggerUid) {
  var out = [];
  for (var i = 0; i < triggers.length; i++) {
    var t = triggers[i];
    var ours = t.getEventType() == ScriptApp.EventType.ON_EVENT_UPDATED &&
      t.getTriggerSourceId() == calendarId &&
      (typeof t.getHandlerFunction !== 'function' ||
        t.getHandlerFunction() === CONFSYNC_SYNC_HANDLER_);
    var firing = confsyncIsNonEmptyString_(triggerUid) && typeof t.getUniqueId === 'function' &&
      t.getUniqueId() === triggerUid;
    if (ours || firing) {
      out.push(t);
    }
  }
  return out;
}

function confsyncRelease_(lock) {
  if (!lock) {
    return;
  }
  try {
    lock.releaseLock();
  } catch (err) {
    // Locks are released when the execution ends anyway.
  }
}

/**
 * Whether a 404 from POST /v1/calendars/{id}/sync means "the service does not know this
 * calendar" rather than "no such endpoint" (a wrong CONFSYNC_BASE_URL prefix must not remove
 * every trigger). Yes when the JSON answer names the calendar (`calendarId`, top level or in
 * `error`), or when it is the sync handler's own error object: `{"error": {"message"}}` without
 * the `code` (and `conferenceErrorType`) that the service's routing 404s carry.
 */
function confsyncCalendarForgotten_(response, calendarId) {
  var body;
  try {
    body = JSON.parse(response.getContentText());
  } catch (err) {
    return false;
  }
  if (!body || typeof body !== 'object' || !body.error || typeof body.error !== 'object') {
    return false;
  }
  if (body.calendarId === calendarId || body.error.calendarId === calendarId) {
    return true;
  }
  return body.error.code === undefined && body.error.conferenceErrorType === undefined;
}

/**
 * Puts this user's OpenID Connect ID token on config (config.identity). False (logged) when
 * there is none: ScriptApp.getIdentityToken() returns a token only when the `openid` scope is in
 * the manifest and granted.
 */
function confsyncAttachIdentity_(config) {
  var token = null;
  try {
    token = typeof ScriptApp.getIdentityToken === 'function' ? ScriptApp.getIdentityToken() : null;
  } catch (err) {
    console.error('confsync: ScriptApp.getIdentityToken() failed: ' + confsyncDescribe_(err, config));
    token = null;
  }
  if (typeof token !== 'string' || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) {
    console.error('confsync: no identity token for this user (ScriptApp.getIdentityToken() gave ' +
      (token === null || token === undefined ? 'none' : 'something that is not a JWT') +
      '): the manifest must request the "openid" scope and the user must have granted it; ' +
      'not calling the service');
    return false;
  }
  config.identity = token;
  return true;
}

/** The headers of every call to the service. */
function confsyncHeaders_(config) {
  var headers = { Authorization: 'Bearer ' + config.apiKey };
  headers[CONFSYNC_IDENTITY_HEADER_] = config.identity;
  return headers;
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

/**
 * The request id: the same for every call about one event (the calendar and the event), never
 * a fresh UUID. The backend creates at most one meeting per event whatever the request id, and
 * a stable id lets its logs tie a retry (after a lost answer) to the first attempt.
 */
function confsyncRequestId_(calendarId, eventId) {
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
    if (type !== 'AUTHENTICATION') {
      return { errorType: type };
    }
    // Calendar sends the user to the authentication URL; ConferenceError.setAuthenticationUrl
    // takes only a valid http(s) URL of at most 1800 characters. Without a usable (absolute
    // https) URL there is nowhere to sign in: the deployment has to fix it, so PERMANENT.
    if (confsyncIsAuthenticationUrl_(apiError.authenticationUrl)) {
      return { errorType: 'AUTHENTICATION', authenticationUrl: apiError.authenticationUrl };
    }
    console.error('confsync: the service answered AUTHENTICATION without a usable ' +
      'authenticationUrl (absolute https, at most ' + CONFSYNC_AUTH_URL_MAX_CHARS_ +
      ' characters; got ' + confsyncRedact_(confsyncSnippet_(JSON.stringify(
        apiError.authenticationUrl === undefined ? null : apiError.authenticationUrl)), config) +
      '): reporting PERMANENT. A relative URL means the service has no public URL configured; ' +
      'no URL at all means the API key or identity token was refused.');
    return { errorType: 'PERMANENT' };
  }

  // No usable error body: classify by status.
  console.error('confsync: POST /v1/conferences answered ' + code + ': ' +
    confsyncRedact_(confsyncSnippet_(text), config));
  if (code >= 500 || code === 408 || code === 429) {
    return { errorType: 'TEMPORARY' };
  }
  if (code === 401) {
    // Our credentials were refused (API key, identity token) and there is no URL where the user
    // could sign in: AUTHENTICATION needs one, so this is the deployment's PERMANENT problem.
    return { errorType: 'PERMANENT' };
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
function confsyncConferenceData_(solutionId, conference, config, extraNote) {
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

  var notes = confsyncIsNonEmptyString_(conference.notes) ? conference.notes : '';
  if (extraNote) {
    var joined = notes ? notes + '<br><br>' + extraNote : extraNote;
    if (joined.length <= CONFSYNC_NOTES_MAX_CHARS_) {
      notes = joined;
    } else {
      console.warn('confsync: no room in the conference notes for: ' + extraNote);
    }
  }
  if (notes) {
    builder.setNotes(notes);
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

/**
 * A ConferenceData that carries only an error of the given type. Should setAuthenticationUrl
 * refuse the URL after all, the error becomes PERMANENT (an AUTHENTICATION without a URL leaves
 * the user nowhere to sign in).
 */
function confsyncErrorData_(solutionId, type, authenticationUrl) {
  var error = ConferenceDataService.newConferenceError()
    .setConferenceErrorType(ConferenceDataService.ConferenceErrorType[type]);
  if (authenticationUrl) {
    try {
      error = error.setAuthenticationUrl(authenticationUrl);
    } catch (err) {
      console.error('confsync: ConferenceError refused the authentication URL: ' +
        confsyncDescribe_(err, null) + '; reporting PERMANENT');
      error = ConferenceDataService.newConferenceError()
        .setConferenceErrorType(ConferenceDataService.ConferenceErrorType.PERMANENT);
    }
  }
  return ConferenceDataService.newConferenceDataBuilder()
    .setConferenceSolutionId(solutionId)
    .setError(error)
    .build();
}

/** An absolute https URL that ConferenceError.setAuthenticationUrl accepts (<= 1800 chars). */
function confsyncIsAuthenticationUrl_(value) {
  return typeof value === 'string' && value.length <= CONFSYNC_AUTH_URL_MAX_CHARS_ &&
    /^https:\/\/[^\s\/?#@:]+(:\d+)?([\/?#][^\s]*)?$/i.test(value);
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

/**
 * Removes the API key, the identity token, any bearer credential and anything shaped like a JWT
 * from text that is about to be logged.
 */
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
  if (config && confsyncIsNonEmptyString_(config.identity)) {
    text = text.split(config.identity).join('[redacted]');
  }
  return text
    .replace(/(Bearer\s+)[^\s"',;]+/gi, '$1[redacted]')
    .replace(/eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g, '[redacted]');
}

if (typeof module !== 'undefined') {
  module.exports = {
    onCreateConference: onCreateConference,
    onCalendarEventUpdated: onCalendarEventUpdated,
    confsyncEnsureSyncTrigger_: confsyncEnsureSyncTrigger_,
    confsyncIsAuthenticationUrl_: confsyncIsAuthenticationUrl_,
    CONFSYNC_IDENTITY_HEADER_: CONFSYNC_IDENTITY_HEADER_,
    confsyncNormaliseBaseUrl_: confsyncNormaliseBaseUrl_,
    confsyncReadConfig_: confsyncReadConfig_,
    confsyncRequestId_: confsyncRequestId_
  };
}
