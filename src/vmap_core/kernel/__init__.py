"""What mirrors the kernel's own tools and formats: the scenarios of
lib/test_vmalloc.c (:mod:`.scenarios`) and /proc/vmallocinfo dumps
(:mod:`.vmallocinfo`)."""
