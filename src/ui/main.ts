/** Page entry: registers <l2s-app> and its panels. */
import './app';
