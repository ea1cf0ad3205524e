// self-recycle/otel with the real SDK's and API's types: both providers fit `meterProvider`.
import { metrics } from '@opentelemetry/api'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
import { start } from 'self-recycle'
import { register, type RegisterOptions } from 'self-recycle/otel'

const options: RegisterOptions = { meterProvider: new MeterProvider(), recycler: start(), flushOnExit: false }
const unregister: () => void = register(options)
unregister()
register({ meterProvider: metrics.getMeterProvider() })()
register()()
