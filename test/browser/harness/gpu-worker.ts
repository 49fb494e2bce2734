/// <reference lib="webworker" />
/** Worker side of gpu-kernels.html: every case (kernels, methods, randomized SVD, AIM statistics). */
import { AIM_GPU_CASES } from './aim-gpu-cases';
import { serveCases } from './case-runner';
import { GPU_CASES } from './gpu-cases';
import { RSVD_CASES } from './gpu-rsvd-cases';

serveCases(() => [...GPU_CASES, ...RSVD_CASES, ...AIM_GPU_CASES]);
