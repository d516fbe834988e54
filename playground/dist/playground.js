// Starts GraphiQL against /graphql on this server, with the key header filled in and a tab of
// ready-to-run examples for every operation of the API.
(function () {
  "use strict";

  var HTTP_KEY_HEADERS = JSON.stringify({ Authorization: "Bearer defaulthttpkey" }, null, 2);
  var ADMIN_KEY_HEADERS = JSON.stringify({ Authorization: "Bearer defaultadminkey" }, null, 2);

  function tab(query, variables, headers) {
    return {
      query: query.trim() + "\n",
      variables: variables ? JSON.stringify(variables, null, 2) : undefined,
      headers: headers || HTTP_KEY_HEADERS,
    };
  }

  var tabs = [
    tab(
      "# Welcome! Set your key in the Headers pane below (http key for reads, admin key for changes),\n" +
        "# then press the run button. Each tab holds a ready-made operation; the Docs button lists everything.\n" +
        "{\n  health {\n    status\n    version\n    uptimeSeconds\n" +
        "    database { ok backend latencyMs migrationsApplied migrationsPending error }\n" +
        "    cache { entries hits misses ttlSeconds }\n  }\n}"
    ),
    tab(
      "query RemoteConfig($userId: String!, $experimentId: String) {\n" +
        "  remoteConfig(userId: $userId, experimentId: $experimentId) {\n" +
        "    userId experimentId cohort source version config\n" +
        "    assignments { experimentId cohort assignedAt }\n  }\n}",
      { userId: "player-1", experimentId: null }
    ),
    tab(
      "query ExperimentAssignment($userId: String!, $experimentId: String!) {\n" +
        "  experimentAssignment(userId: $userId, experimentId: $experimentId) {\n" +
        "    userId experimentId cohort assignedAt\n  }\n}",
      { userId: "player-1", experimentId: "onboarding_v2" }
    ),
    tab(
      "query ActiveExperiments {\n  activeExperiments {\n    id name description active startAt endAt\n" +
        "    cohorts { name weight }\n    variants { cohort version config updatedAt }\n  }\n}"
    ),
    tab(
      "query UserEvents($userId: String!, $eventName: String, $since: DateTime, $until: DateTime, $first: Int, $after: String) {\n" +
        "  userEvents(userId: $userId, eventName: $eventName, since: $since, until: $until, first: $first, after: $after) {\n" +
        "    nodes { eventId eventName timestamp receivedAt sessionId properties experimentId cohort }\n" +
        "    pageInfo { hasNextPage endCursor }\n  }\n}",
      { userId: "player-1", first: 20 }
    ),
    tab(
      "mutation CollectEvents($events: [EventInput!]!) {\n  collectEvents(events: $events) {\n" +
        "    accepted duplicates eventIds\n  }\n}",
      {
        events: [
          { eventId: "demo-1", userId: "player-1", eventName: "level_up", properties: { level: 2 } },
          { userId: "player-1", eventName: "purchase", timestamp: 1735689600, properties: { sku: "coins_100" } },
        ],
      }
    ),
    tab(
      "# Admin key needed (see Headers).\nquery Experiment($id: String!) {\n  experiment(id: $id) {\n" +
        "    id name description active startAt endAt createdAt updatedAt\n    cohorts { name weight }\n" +
        "    variants { cohort version config }\n  }\n}",
      { id: "onboarding_v2" },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers).\nmutation UpsertExperiment($input: ExperimentInput!) {\n" +
        "  upsertExperiment(input: $input) {\n    id name active cohorts { name weight }\n  }\n}",
      { input: { id: "onboarding_v2", name: "Onboarding v2", cohorts: { control: 0.5, variant_b: 0.5 } } },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers).\nmutation SetExperimentActive($id: String!, $active: Boolean!) {\n" +
        "  setExperimentActive(id: $id, active: $active) {\n    id active\n  }\n}",
      { id: "onboarding_v2", active: true },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers). Leave experimentId out for the global default.\n" +
        "mutation UpdateRemoteConfig($experimentId: String, $cohort: String, $config: JSON!, $merge: Boolean) {\n" +
        "  updateRemoteConfig(experimentId: $experimentId, cohort: $cohort, config: $config, merge: $merge) {\n" +
        "    experimentId cohort version config updatedAt\n  }\n}",
      { experimentId: "onboarding_v2", cohort: "variant_b", config: { tutorial: "short" }, merge: true },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers). Safe editing: the write happens only if the stored version is still\n" +
        "# expectedVersion (0: the variant must not exist yet). Run it twice: the second run gets CONFLICT,\n" +
        "# naming the stored version; read the config again, redo the change and send the new version.\n" +
        "mutation SafeUpdate($experimentId: String, $cohort: String, $config: JSON!, $expectedVersion: Int, $note: String) {\n" +
        "  updateRemoteConfig(experimentId: $experimentId, cohort: $cohort, config: $config,\n" +
        "                     expectedVersion: $expectedVersion, note: $note) {\n" +
        "    experimentId cohort version config updatedAt\n  }\n}",
      { config: { coins: 100, difficulty: "normal" }, expectedVersion: 0, note: "first global config" },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers). Every version of a config variant, newest first, with who and why.\n" +
        "query ConfigHistory($experimentId: String, $cohort: String, $first: Int, $after: String) {\n" +
        "  configHistory(experimentId: $experimentId, cohort: $cohort, first: $first, after: $after) {\n" +
        "    nodes { version config createdAt actor note rolledBackFrom }\n" +
        "    pageInfo { hasNextPage endCursor }\n  }\n}",
      { experimentId: null, cohort: null, first: 20 },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers). Publishes a kept version again as a new version (history is kept).\n" +
        "mutation Rollback($experimentId: String, $cohort: String, $toVersion: Int!, $note: String) {\n" +
        "  rollbackRemoteConfig(experimentId: $experimentId, cohort: $cohort, toVersion: $toVersion, note: $note) {\n" +
        "    experimentId cohort version config updatedAt\n  }\n}",
      { experimentId: null, cohort: null, toVersion: 1, note: "back to the launch config" },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers). Who changed what, when, from what to what. Filter with\n" +
        "# entityType (experiment or config) and entityId (an experiment id, or experiment/cohort).\n" +
        "query AuditLog($first: Int, $after: String, $entityType: String, $entityId: String) {\n" +
        "  auditLog(first: $first, after: $after, entityType: $entityType, entityId: $entityId) {\n" +
        "    nodes { id at actor action entityType entityId before after }\n" +
        "    pageInfo { hasNextPage endCursor }\n  }\n}",
      { first: 20, entityType: null, entityId: null },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers). Every change of an experiment's weights, salt, activity or window.\n" +
        "query ExperimentHistory($id: String!) {\n  experiment(id: $id) {\n    id name\n" +
        "    history { at actor cohorts { name weight } salt active startAt endAt }\n  }\n}",
      { id: "onboarding_v2" },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Admin key needed (see Headers). Which cohort won: every assigned user counts (no events: 0).\n" +
        "# pValue: how often chance alone would give a difference this large; significant when below alpha.\n" +
        "# diffCi / liftCi: the range the true difference (absolute / relative to control) most likely lies in.\n" +
        "# chanceToBeatControl: the probability this cohort is really better. srm.ok false: the cohorts hold\n" +
        "# the wrong numbers of users (an assignment or logging bug): do not trust the other figures then.\n" +
        "# Leave metrics out to use the ones saved with upsertExperiment(input: {metrics: [...]}).\n" +
        "query ExperimentResults($experimentId: String!, $metrics: [MetricInput!], $alpha: Float) {\n" +
        "  experimentResults(experimentId: $experimentId, metrics: $metrics, alpha: $alpha) {\n" +
        "    control users computedAt\n" +
        "    cohorts { cohort users observedShare expectedShare }\n" +
        "    srm { checked ok chiSquare pValue }\n" +
        "    metrics {\n      metric { key kind }\n" +
        "      cohorts { cohort users mean stddev diff diffCi lift liftCi pValue chanceToBeatControl significant }\n" +
        "    }\n  }\n}",
      {
        experimentId: "onboarding_v2",
        alpha: 0.05,
        metrics: [
          { key: "finished_tutorial", eventName: "tutorial_complete", kind: "CONVERSION", windowHours: 24 },
          { key: "levels", eventName: "level_up", kind: "COUNT" },
          { key: "revenue", eventName: "purchase", kind: "SUM", property: "amount" },
        ],
      },
      ADMIN_KEY_HEADERS
    ),
    tab(
      "# Runs over WebSocket (/graphql/ws): the current config at once, then each change.\n" +
        "# Change the config in another tab (UpdateRemoteConfig) and watch it arrive here.\n" +
        "subscription RemoteConfigChanged($userId: String!, $experimentId: String) {\n" +
        "  remoteConfigChanged(userId: $userId, experimentId: $experimentId) {\n" +
        "    userId experimentId cohort source version config\n  }\n}",
      { userId: "player-1", experimentId: null }
    ),
    tab(
      "# Admin key needed (see Headers). Every event stored from now on, by any instance.\n" +
        "# Send some with the CollectEvents tab and watch them arrive here.\n" +
        "subscription LiveEvents($userId: String, $eventName: String, $experimentId: String) {\n" +
        "  liveEvents(userId: $userId, eventName: $eventName, experimentId: $experimentId) {\n" +
        "    eventId userId eventName timestamp receivedAt properties experimentId cohort\n  }\n}",
      { userId: "player-1" },
      ADMIN_KEY_HEADERS
    ),
  ];

  // Subscriptions go over WebSocket; GraphiQL sends the Headers pane as connection_init's payload,
  // which is where the server reads the key.
  var subscriptionUrl =
    (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql/ws";
  var graphqlFetcher = GraphiQL.createFetcher({ url: "/graphql", subscriptionUrl: subscriptionUrl });

  // GraphiQL introspects to fill the docs and autocompletion. The server publishes the same
  // answer at /playground/schema.json without a key, so the docs work before a key is entered and
  // whatever limits /graphql puts on queries.
  function fetcher(params, options) {
    if (params && params.operationName === "IntrospectionQuery") {
      return fetch("/playground/schema.json").then(function (response) {
        if (!response.ok) return graphqlFetcher(params, options);
        return response.json();
      });
    }
    return graphqlFetcher(params, options);
  }

  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultTabs: tabs,
      defaultHeaders: HTTP_KEY_HEADERS,
      defaultEditorToolsVisibility: "headers",
      isHeadersEditorEnabled: true,
      shouldPersistHeaders: true,
    })
  );
})();
