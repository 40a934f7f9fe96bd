#!/usr/bin/env node
'use strict';
// Writes addon/appsscript.json from addon/appsscript.template.json for one deployment:
//
//   node tools/configure.js --backend https://confsync.example.com/ [--logo URL] [--solution-logo URL]
//   node tools/configure.js --check            # only checks the existing appsscript.json
//
// What it fills in, and the rules it enforces (each from Google's Apps Script references):
// - urlFetchWhitelist: the confsync base URL as a prefix. Required for a versioned deployment;
//   each prefix must be a valid https:// URL with a full domain and a non-empty path
//   ("https://host/" is valid, "https://host" is not). (Manifest reference, "Allowlist URLs".)
// - addOns.calendar.conferenceSolution[].logoUrl: Calendar shows it directly, so it must be on
//   Google's infrastructure: the icon uploaded to the Google Workspace Marketplace SDK store
//   listing (Graphics Assets). (Calendar conferencing: "Provide conference solution logos".)
//   This tool accepts https URLs on the hosts in GOOGLE_IMAGE_HOSTS only.
// - addOns.common.logoUrl: https (the toolbar image); by default the same as the solution logo.
// - Scopes: every access the manifest declares has its scope (manifestProblems below).
//
// No dependencies; Node 20+. Nothing here is pushed to Apps Script (.claspignore).

const fs = require('node:fs');
const path = require('node:path');

const ADDON_DIR = path.join(__dirname, '..');
const TEMPLATE = path.join(ADDON_DIR, 'appsscript.template.json');
const MANIFEST = path.join(ADDON_DIR, 'appsscript.json');

/**
 * Hosts we accept as "Google's infrastructure" for images. The Marketplace SDK serves uploaded
 * store-listing graphics from *.googleusercontent.com; *.gstatic.com is Google's static content
 * host (the default placeholder below). Our reading of the reference, which names no host.
 */
const GOOGLE_IMAGE_HOSTS = ['googleusercontent.com', 'gstatic.com'];

/**
 * Placeholder logo (a Google Material icon on gstatic), good for test deployments. To publish,
 * pass the store-listing icon URL from the Marketplace SDK with --logo.
 */
const DEFAULT_LOGO_URL = 'https://www.gstatic.com/images/icons/material/system/2x/video_call_black_48dp.png';

const SCOPE = {
  execute: 'https://www.googleapis.com/auth/calendar.addons.execute',
  eventRead: 'https://www.googleapis.com/auth/calendar.addons.current.event.read',
  eventWrite: 'https://www.googleapis.com/auth/calendar.addons.current.event.write',
  externalRequest: 'https://www.googleapis.com/auth/script.external_request',
  scriptApp: 'https://www.googleapis.com/auth/script.scriptapp',
  openid: 'openid',
  email: 'https://www.googleapis.com/auth/userinfo.email',
};

/**
 * currentEventAccess -> the scopes the Calendar manifest reference requires with it:
 * READ or READ_WRITE needs calendar.addons.current.event.read, WRITE or READ_WRITE needs
 * calendar.addons.current.event.write; METADATA needs neither.
 */
const SCOPES_FOR_EVENT_ACCESS = {
  METADATA: [],
  READ: [SCOPE.eventRead],
  WRITE: [SCOPE.eventWrite],
  READ_WRITE: [SCOPE.eventRead, SCOPE.eventWrite],
};

function parseUrl(raw) {
  try {
    return new URL(raw);
  } catch (err) {
    return null;
  }
}

/** A host name with at least two labels and no IP literal: the reference's "full domain". */
function isFullDomain(hostname) {
  if (!hostname || hostname.startsWith('[') || /^\d+(\.\d+){3}$/.test(hostname)) return false;
  const labels = hostname.split('.');
  return labels.length >= 2 && labels.every((l) => /^[a-z0-9-]+$/i.test(l) && !l.startsWith('-') && !l.endsWith('-'));
}

/**
 * The urlFetchWhitelist prefix for a confsync base URL: https, full domain, no credentials,
 * query or fragment, and a path ending in '/'. Throws with the reason otherwise.
 */
function backendPrefix(raw) {
  const text = String(raw === undefined || raw === null ? '' : raw).trim();
  const url = parseUrl(text);
  if (!url || !/^https:\/\//i.test(text)) throw new Error(`backend URL must be an absolute https:// URL: ${JSON.stringify(text)}`);
  if (url.protocol !== 'https:') throw new Error(`backend URL must use https: ${text}`);
  if (url.username || url.password) throw new Error('backend URL must not carry credentials');
  if (url.search || url.hash || /[?#]/.test(text)) throw new Error('backend URL must not have a query or fragment');
  if (!isFullDomain(url.hostname)) throw new Error(`backend URL needs a full domain name (no IP address, no single label): ${url.hostname}`);
  let pathname = url.pathname.replace(/\/{2,}/g, '/');
  if (!pathname.endsWith('/')) pathname += '/';
  return `https://${url.host.toLowerCase()}${pathname}`;
}

/** Problems with an allowlist prefix, per the reference (empty when it is fine). */
function allowlistPrefixProblems(prefix) {
  const problems = [];
  if (typeof prefix !== 'string') return ['not a string'];
  if (!prefix.startsWith('https://')) problems.push('must use https://');
  // A single leading "*." wildcard is allowed for subdomains.
  const host = prefix.replace(/^https:\/\//, '').split('/')[0];
  const wildcard = host.startsWith('*.');
  if (host.slice(wildcard ? 2 : 0).includes('*')) problems.push('only one wildcard, as the leading label');
  const url = parseUrl(wildcard ? prefix.replace('*.', 'wildcard.') : prefix);
  if (!url) {
    problems.push('not a valid URL');
    return problems;
  }
  if (!isFullDomain(url.hostname)) problems.push('needs a full domain');
  if (!/^https:\/\/[^/]+\/.*$/.test(prefix)) problems.push('needs a non-empty path (at least "/")');
  if (!prefix.endsWith('/')) problems.push('should end with "/" so it cannot match a longer host or path segment');
  return problems;
}

/** Problems with a logo URL; googleHosted: the conference solution logo rule. */
function logoUrlProblems(raw, { googleHosted }) {
  const url = typeof raw === 'string' ? parseUrl(raw) : null;
  if (!url) return ['not a valid absolute URL'];
  const problems = [];
  if (url.protocol !== 'https:') problems.push('must use https');
  if (googleHosted) {
    const host = url.hostname.toLowerCase();
    if (!GOOGLE_IMAGE_HOSTS.some((h) => host === h || host.endsWith(`.${h}`))) {
      problems.push(`must be hosted on Google's infrastructure (the Marketplace SDK store-listing icon; accepted hosts: *.${GOOGLE_IMAGE_HOSTS.join(', *.')})`);
    }
  }
  return problems;
}

/** Everything wrong with a manifest against the documented rules (empty list: fine). */
function manifestProblems(manifest) {
  const problems = [];
  const scopes = Array.isArray(manifest.oauthScopes) ? manifest.oauthScopes : [];
  const needScope = (scope, why) => {
    if (!scopes.includes(scope)) problems.push(`oauthScopes lacks ${scope} (${why})`);
  };
  const calendar = manifest.addOns && manifest.addOns.calendar;
  if (calendar) {
    needScope(SCOPE.execute, 'every Calendar add-on');
    if (calendar.currentEventAccess !== undefined) {
      const needed = SCOPES_FOR_EVENT_ACCESS[calendar.currentEventAccess];
      if (!needed) problems.push(`currentEventAccess ${calendar.currentEventAccess} is not one of ${Object.keys(SCOPES_FOR_EVENT_ACCESS).join(', ')}`);
      for (const scope of needed || []) needScope(scope, `currentEventAccess ${calendar.currentEventAccess}`);
    }
    for (const solution of calendar.conferenceSolution || []) {
      for (const field of ['id', 'name', 'logoUrl', 'onCreateFunction']) {
        if (!solution[field]) problems.push(`conferenceSolution ${solution.id || '?'} lacks ${field}`);
      }
      for (const p of logoUrlProblems(solution.logoUrl, { googleHosted: true })) {
        problems.push(`conferenceSolution ${solution.id} logoUrl ${solution.logoUrl}: ${p}`);
      }
    }
  }
  const common = manifest.addOns && manifest.addOns.common;
  if (common) {
    for (const p of logoUrlProblems(common.logoUrl, { googleHosted: false })) {
      problems.push(`addOns.common.logoUrl ${common.logoUrl}: ${p}`);
    }
  }
  const whitelist = manifest.urlFetchWhitelist;
  if (!Array.isArray(whitelist) || whitelist.length === 0) {
    problems.push('urlFetchWhitelist is missing (required for a versioned deployment)');
  } else {
    needScope(SCOPE.externalRequest, 'UrlFetchApp');
    for (const prefix of whitelist) {
      for (const p of allowlistPrefixProblems(prefix)) problems.push(`urlFetchWhitelist ${prefix}: ${p}`);
    }
  }
  needScope(SCOPE.scriptApp, 'ScriptApp triggers');
  needScope(SCOPE.openid, 'ScriptApp.getIdentityToken');
  return problems;
}

/** Replaces the template's {{PLACEHOLDER}} string values. */
function fill(value, values) {
  if (typeof value === 'string') {
    return value.replace(/\{\{([A-Z_]+)\}\}/g, (m, name) => {
      if (!Object.prototype.hasOwnProperty.call(values, name)) throw new Error(`template placeholder ${m} has no value`);
      return values[name];
    });
  }
  if (Array.isArray(value)) return value.map((v) => fill(v, values));
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = fill(v, values);
    return out;
  }
  return value;
}

/**
 * The manifest for one deployment. Throws (with every problem) when the result would break a
 * documented rule.
 */
function renderManifest(template, { backend, logo, solutionLogo } = {}) {
  const logoUrl = logo || DEFAULT_LOGO_URL;
  const values = {
    BACKEND_PREFIX: backendPrefix(backend),
    LOGO_URL: logoUrl,
    SOLUTION_LOGO_URL: solutionLogo || logoUrl,
  };
  const manifest = fill(template, values);
  const problems = manifestProblems(manifest);
  if (problems.length) throw new Error(`the manifest would not follow Google's rules:\n  - ${problems.join('\n  - ')}`);
  return manifest;
}

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`unexpected argument ${a}`);
    const name = m[1];
    if (name === 'check' || name === 'help') {
      args[name] = true;
      continue;
    }
    const value = m[2] !== undefined ? m[2] : argv[++i];
    if (value === undefined) throw new Error(`--${name} needs a value`);
    args[name] = value;
  }
  return args;
}

const USAGE = `usage: node tools/configure.js --backend https://HOST[/PREFIX]/ [--logo URL] [--solution-logo URL]
                 [--template FILE] [--out FILE]
       node tools/configure.js --check [--out FILE]`;

function main(argv) {
  const args = parseArgs(argv);
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const out = args.out ? path.resolve(args.out) : MANIFEST;
  if (args.check) {
    const problems = manifestProblems(JSON.parse(fs.readFileSync(out, 'utf8')));
    if (problems.length) {
      console.error(`${out}:\n  - ${problems.join('\n  - ')}`);
      return 1;
    }
    console.log(`${out} follows the documented rules`);
    return 0;
  }
  if (!args.backend) throw new Error(`--backend is required\n${USAGE}`);
  const template = JSON.parse(fs.readFileSync(args.template ? path.resolve(args.template) : TEMPLATE, 'utf8'));
  const manifest = renderManifest(template, { backend: args.backend, logo: args.logo, solutionLogo: args['solution-logo'] });
  fs.writeFileSync(out, `${JSON.stringify(manifest, null, 2)}\n`);
  console.log(`wrote ${out}: urlFetchWhitelist ${manifest.urlFetchWhitelist.join(', ')}`);
  if (!args.logo) {
    console.log('note: placeholder logo; to publish, pass --logo with the Marketplace SDK store-listing icon URL');
  }
  console.log(`set the Script Property CONFSYNC_BASE_URL to a URL under ${manifest.urlFetchWhitelist[0]}`);
  return 0;
}

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (err) {
    console.error(`configure: ${err.message}`);
    process.exitCode = 2;
  }
}

module.exports = {
  GOOGLE_IMAGE_HOSTS,
  DEFAULT_LOGO_URL,
  SCOPE,
  SCOPES_FOR_EVENT_ACCESS,
  allowlistPrefixProblems,
  backendPrefix,
  logoUrlProblems,
  manifestProblems,
  renderManifest,
  main,
};
