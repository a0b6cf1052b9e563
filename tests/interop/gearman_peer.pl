#!/usr/bin/perl
# Perl's Gearman::Client and Gearman::Worker (libgearman-client-perl) as a peer
# for tests/interop/test_perl.py.  It prints one line per event it sees, so the
# Python side can assert the whole conversation.
#
#   gearman_peer.pl HOST:PORT client
#       reads commands on stdin, one per line, and answers on stdout:
#         fg FUNC ARG       a foreground task; prints "status N D", "data X",
#                           "warning X", then "complete RESULT" or "fail", then "done"
#         bg FUNC UNIQ ARG  dispatch_background; prints "handle HANDLE"
#         status HANDLE     get_status; prints "status KNOWN RUNNING NUM DEN"
#
#   gearman_peer.pl HOST:PORT worker FUNC COUNT
#       serves FUNC until COUNT jobs are done; prints "ready" once registered,
#       then per job "job ARG" and "complete HANDLE" or "fail HANDLE".  The
#       job's argument says what to do: "fail" returns undef (WORK_FAIL),
#       "status:TEXT" sends WORK_STATUS 1/2 and 2/2 first, anything else is
#       returned reversed (WORK_COMPLETE).
use strict;
use warnings;
use Gearman::Client;
use Gearman::Worker;

$| = 1;
my ($server, $role, @rest) = @ARGV;
die "usage: $0 HOST:PORT client|worker ...\n" unless $server && $role;

if ($role eq 'client') {
    my $client = Gearman::Client->new(job_servers => [$server]);
    while (my $line = <STDIN>) {
        chomp $line;
        my ($cmd, @args) = split / /, $line, -1;
        if ($cmd eq 'fg') {
            my ($func, $arg) = @args;
            my $ts = $client->new_task_set;
            $ts->add_task($func, $arg, {
                on_status   => sub { print "status $_[0] $_[1]\n" },
                on_data     => sub { print "data ${$_[0]}\n" },
                on_warning  => sub { print "warning ${$_[0]}\n" },
                on_complete => sub { print "complete ${$_[0]}\n" },
                on_fail     => sub { print "fail\n" },
            });
            $ts->wait(timeout => 15);
            print "done\n";
        }
        elsif ($cmd eq 'bg') {
            my ($func, $uniq, $arg) = @args;
            my $handle = $client->dispatch_background($func, $arg, { uniq => $uniq });
            print "handle ", (defined $handle ? $handle : 'undef'), "\n";
        }
        elsif ($cmd eq 'status') {
            my $st = $client->get_status($args[0]);
            if ($st) {
                printf "status %d %d %s %s\n", $st->known ? 1 : 0, $st->running ? 1 : 0,
                    $st->[2], $st->[3];
            }
            else {
                print "status undef\n";
            }
        }
        else {
            die "unknown command: $line\n";
        }
    }
}
elsif ($role eq 'worker') {
    my ($func, $count) = @rest;
    my $done = 0;
    my $worker = Gearman::Worker->new(job_servers => [$server]);
    $worker->register_function($func => sub {
        my $job = shift;
        my $arg = $job->arg;
        print "job $arg\n";
        return undef if $arg eq 'fail';
        if ($arg =~ /^status:(.*)$/) {
            $job->set_status(1, 2);
            $job->set_status(2, 2);
            $arg = $1;
        }
        return scalar reverse $arg;
    });
    print "ready\n";
    $worker->work(
        on_complete => sub { $done++; print "complete $_[0]\n" },
        on_fail     => sub { $done++; print "fail $_[0]\n" },
        stop_if     => sub { $done >= $count },
    );
}
else {
    die "unknown role: $role\n";
}
