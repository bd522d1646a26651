"""The floor for a two-node farm on one machine: a pre-started Blender with the scene
loaded renders one half of the frames with one thread, waiting for a shared start signal,
and prints how long its half took (`HALF seconds`). Run two at once, one per half, then
create the signal file; the slower half is the floor's wall time. See BENCHMARKS.md.

    blender -b SCENE --python bench/floor_half.py -- FROM TO OUTDIR SIGNAL
"""
import os
import sys
import time

import bpy

first, last, out, signal = sys.argv[sys.argv.index("--") + 1:][:4]
scene = bpy.context.scene
scene.render.filepath = os.path.join(out, "f_####")
scene.render.threads_mode = "FIXED"
scene.render.threads = 1
scene.render.use_persistent_data = True
while not os.path.exists(signal):
    time.sleep(0.005)
started = time.time()
scene.frame_start, scene.frame_end = int(first), int(last)
bpy.ops.render.render(animation=True)
print("HALF", round(time.time() - started, 3), flush=True)
