<?php
// A PHP client (pecl gearman) calling Python workers: php client.php [host:port]
// It expects the functions of python_worker.py (or worker.php): reverse, progress, fail, explode.
$server = $argv[1] ?? "localhost:4730";
[$host, $port] = explode(":", $server) + [1 => 4730];

$client = new GearmanClient();
$client->addServer($host, (int)$port);

// The classic: a foreground job, its result returned.
print "reverse: " . $client->doNormal("reverse", "Hello world!") . "\n";

// Priorities.
print "high: " . $client->doHigh("reverse", "high") . "\n";
print "low: " . $client->doLow("reverse", "low") . "\n";

// A background job, followed with jobStatus until the server no longer knows it.
$handle = $client->doBackground("reverse", "in the background");
print "background: " . ($client->returnCode() == GEARMAN_SUCCESS ? "submitted" : "error") . "\n";
for ($i = 0; $i < 500; $i++) {
    [$known, $running, $numerator, $denominator] = $client->jobStatus($handle);
    if (!$known) break;
    usleep(10000);
}
print "background done: " . ($known ? "no" : "yes") . "\n";

// A failure and an exception, one at a time.
$client->doNormal("fail", "x");
print "fail: " . ($client->returnCode() == GEARMAN_WORK_FAIL ? "GEARMAN_WORK_FAIL" : $client->returnCode()) . "\n";
$client->doNormal("explode", "this");
$code = $client->returnCode();
print "explode: " . ($code == GEARMAN_WORK_EXCEPTION ? "GEARMAN_WORK_EXCEPTION"
                     : ($code == GEARMAN_WORK_FAIL ? "GEARMAN_WORK_FAIL" : $code)) . "\n";

// Several tasks at once, with callbacks.
$events = [];
$client->setCompleteCallback(function ($task, $context) use (&$events) {
    $events[] = [$context, "complete: " . $task->data()];
});
$client->setDataCallback(function ($task, $context) use (&$events) {
    $events[] = [$context, "data: " . $task->data()];
});
$client->setStatusCallback(function ($task, $context) use (&$events) {
    $events[] = [$context, "status: " . $task->taskNumerator() . "/" . $task->taskDenominator()];
});
$client->setFailCallback(function ($task, $context) use (&$events) {
    $events[] = [$context, "fail"];
});
$client->setExceptionCallback(function ($task, $context) use (&$events) {
    $events[] = [$context, "exception: " . $task->data()];
});
$client->addTask("reverse", "one", "t1");
$client->addTaskHigh("reverse", "two", "t2");
$client->addTaskLow("reverse", "three", "t3");
$client->addTask("progress", "job", "t4");
$client->addTask("fail", "x", "t5");
$client->addTask("explode", "that", "t6");
if (!$client->runTasks()) {
    print "runTasks: " . $client->error() . "\n";
}
// Grouped by task (a stable sort), each task's events in the order they came.
usort($events, fn($a, $b) => strcmp($a[0], $b[0]));
foreach ($events as [$context, $event]) print "task $context $event\n";
