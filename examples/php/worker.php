<?php
// A PHP worker (pecl gearman) serving Python clients: php worker.php [host:port]
// The same functions as python_worker.py: reverse, progress, fail, explode.
$server = $argv[1] ?? "localhost:4730";
[$host, $port] = explode(":", $server) + [1 => 4730];

$worker = new GearmanWorker();
$worker->addServer($host, (int)$port);
$worker->setId("php-worker");

$worker->addFunction("reverse", fn(GearmanJob $job) => strrev($job->workload()));

$worker->addFunction("progress", function (GearmanJob $job) {
    for ($step = 1; $step <= 3; $step++) {
        $job->sendStatus($step, 3);
        $job->sendData("part $step of " . $job->workload());
    }
    return "all parts of " . $job->workload();
});

$worker->addFunction("fail", function (GearmanJob $job) {
    $job->sendFail();
});

$worker->addFunction("explode", function (GearmanJob $job) {
    $job->sendException("cannot handle " . $job->workload());
});

pcntl_async_signals(true);
$running = true;
foreach ([SIGTERM, SIGINT] as $signal) {
    pcntl_signal($signal, function () use (&$running) { $running = false; });
}
// Non-blocking, so that a signal is noticed between jobs.
$worker->addOptions(GEARMAN_WORKER_NON_BLOCKING);
$worker->setTimeout(1000);
while ($running) {
    if (@$worker->work()) continue;
    $code = $worker->returnCode();
    if ($code == GEARMAN_IO_WAIT || $code == GEARMAN_NO_JOBS) {
        @$worker->wait();
    } elseif ($code != GEARMAN_TIMEOUT && $code != GEARMAN_NO_ACTIVE_FDS) {
        fwrite(STDERR, "worker: " . $worker->error() . "\n");
        exit(1);
    }
}
