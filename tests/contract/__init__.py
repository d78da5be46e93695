"""The kernel contract suite: one set of tests, run against FakeKernel and LinuxKernel."""
